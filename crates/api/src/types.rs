//! The `tusk.rs/v1beta1` `PostgresCluster` custom resource: spec and status types.
//!
//! Field names follow the PGO family (Crunchy PGO v5, Percona PG v2, IvorySQL operator) so
//! their manifests apply with only `apiVersion`/`kind` changed. Standard Kubernetes types come
//! from k8s-openapi; free-form maps are used only where the field is free-form.
//!
//! What the OpenAPI schema and CEL can say is said here, so the API server rejects it before
//! the operator sees it; everything else is checked by [`crate::validate`]. No I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, LocalObjectReference, PersistentVolumeClaimSpec, ResourceRequirements,
    SecretProjection, Toleration, TopologySpreadConstraint, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// Oldest and newest PostgreSQL major Tusk runs.
pub const MIN_POSTGRES_VERSION: i32 = 13;
pub const MAX_POSTGRES_VERSION: i32 = 17;

/// Longest cluster name: `<c>-repo-host` and `<c>-<set>-xxxx` (plus the 11 characters the
/// StatefulSet controller appends for `controller-revision-hash`) must stay within 63.
pub const MAX_CLUSTER_NAME: usize = 40;
/// Longest `<cluster>` + `<instance set>` name together (see [`MAX_CLUSTER_NAME`]).
pub const MAX_CLUSTER_AND_SET_NAME: usize = 46;

/// A free-form object the API server keeps as written (`x-kubernetes-preserve-unknown-fields`).
pub type FreeForm = BTreeMap<String, serde_json::Value>;

fn free_form(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A map of string to string whose values may be written as numbers or booleans in YAML
/// (`repo1-retention-full: 4`); they are kept as strings.
pub type StringMap = BTreeMap<String, StringOrNumber>;

/// A scalar configuration value: users write `max_connections: 100` or `"100"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum StringOrNumber {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl std::fmt::Display for StringOrNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::String(s) => f.write_str(s),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl JsonSchema for StringOrNumber {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StringOrNumber".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "x-kubernetes-int-or-string": true })
    }
    fn inline_schema() -> bool {
        true
    }
}

/// Labels and annotations Tusk adds to the objects it creates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A declared PostgreSQL cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tusk.rs",
    version = "v1beta1",
    kind = "PostgresCluster",
    plural = "postgresclusters",
    shortname = "pgc",
    namespaced,
    status = "PostgresClusterStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Primary","type":"string","jsonPath":".status.primary"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.readyInstances"}"#,
    printcolumn = r#"{"name":"Last Backup","type":"date","jsonPath":".status.pgbackrest.lastBackupCompletion","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 40")
        .message("metadata.name: must be a lowercase DNS label of at most 40 characters starting with a letter, so every derived object name fits").field_path(".metadata.name"),
    validation = Rule::new("self.spec.instances.all(i, !has(i.name) || size(self.metadata.name) + size(i.name) <= 46)")
        .message("spec.instances: cluster name plus instance set name must be at most 46 characters so instance names fit in 63").field_path(".spec.instances"),
)]
#[x_kube(cel)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.customTLSSecret) || has(self.customReplicationTLSSecret)").message("spec.customTLSSecret requires spec.customReplicationTLSSecret").field_path(".customReplicationTLSSecret"))]
#[x_kube(validation = Rule::new("!has(self.customReplicationTLSSecret) || has(self.customTLSSecret)").message("spec.customReplicationTLSSecret requires spec.customTLSSecret").field_path(".customTLSSecret"))]
#[x_kube(validation = Rule::new("self.instances.all(a, !has(a.name) || self.instances.exists_one(b, has(b.name) && b.name == a.name))").message("spec.instances: instance set names must be unique").field_path(".instances"))]
#[x_kube(validation = Rule::new("!has(self.standby) || !self.standby.enabled || has(self.standby.repoName) || has(self.standby.host)").message("spec.standby: an enabled standby needs repoName, host, or both").field_path(".standby"))]
#[x_kube(validation = Rule::new("!has(self.standby) || !has(self.standby.repoName) || (has(self.backups) && self.backups.pgbackrest.repos.exists(r, r.name == self.standby.repoName))").message("spec.standby.repoName: must name a repo in spec.backups.pgbackrest.repos").field_path(".standby.repoName"))]
pub struct PostgresClusterSpec {
    /// Major version of PostgreSQL.
    #[schemars(range(min = 13, max = 17))]
    pub postgres_version: i32,

    /// Image of the database container (PostgreSQL, Patroni, pgBackRest). Defaults to the
    /// operator's `RELATED_IMAGE_POSTGRES_<major>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,

    /// Port PostgreSQL listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: Option<i32>,

    /// Sets of PostgreSQL instances.
    #[schemars(length(min = 1, max = 16))]
    pub instances: Vec<InstanceSet>,

    /// Users and databases. Without any, a user and a database named after the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub users: Option<Vec<PostgresUser>>,

    /// SQL run once on the primary after the cluster is first ready.
    #[serde(
        rename = "databaseInitSQL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub database_init_sql: Option<DatabaseInitSql>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni: Option<PatroniSpec>,

    /// Backups. Absent: no WAL archiving and no repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<Backups>,

    /// Where the data of a new cluster comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source: Option<DataSource>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<StandbySpec>,

    /// Server certificate (`tls.crt`, `tls.key`, `ca.crt`) instead of Tusk's own.
    #[serde(
        rename = "customTLSSecret",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub custom_tls_secret: Option<SecretProjection>,
    /// Replication client certificate; required together with `customTLSSecret`.
    #[serde(
        rename = "customReplicationTLSSecret",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub custom_replication_tls_secret: Option<SecretProjection>,

    /// The `<cluster>-primary` Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    /// The `<cluster>-replicas` Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_service: Option<ServiceSpec>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,

    /// Labels and annotations for every object of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,

    /// Stop PostgreSQL (instances scaled to zero) and keep the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<bool>,
    /// Stop reconciling: no object is changed while paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    Never,
    IfNotPresent,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::Never => "Never",
            Self::IfNotPresent => "IfNotPresent",
        }
    }
}

/// A set of identical PostgreSQL instances.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSet {
    /// Name of the set; defaults to its position (`00`, `01`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: Option<String>,
    /// Number of instances in the set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Volume for PGDATA.
    pub data_volume_claim_spec: PersistentVolumeClaimSpec,
    /// Separate volume for pg_wal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_volume_claim_spec: Option<PersistentVolumeClaimSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Labels and annotations for the instances of this set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// PodDisruptionBudget minAvailable for the set; defaults to 1 when it has replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    /// Extra sidecar containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<Container>>,
}

/// A PostgreSQL role, its databases, and its connection Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.options) || !self.options.matches('(?i)PASSWORD')").message("options: PASSWORD is managed by Tusk and may not be set").field_path(".options"))]
pub struct PostgresUser {
    /// Role name; also part of the Secret name `<cluster>-pguser-<name>`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Databases the role owns / gets ALL on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 63), regex(pattern = r"^[^\x00]+$"))
    )]
    pub databases: Option<Vec<String>>,
    /// Role attributes, as in `ALTER ROLE ... WITH <options>` (e.g. `CREATEDB CREATEROLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[^;]*$"), length(max = 200))]
    pub options: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct PasswordSpec {
    #[serde(rename = "type")]
    pub type_: PasswordType,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PasswordType {
    #[default]
    AlphaNumeric,
    #[serde(rename = "ASCII")]
    Ascii,
}

/// A key of a ConfigMap holding SQL.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct DatabaseInitSql {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Patroni settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.leaderLeaseDurationSeconds) || !has(self.syncPeriodSeconds) || self.syncPeriodSeconds < self.leaderLeaseDurationSeconds").message("patroni.syncPeriodSeconds must be less than leaderLeaseDurationSeconds").field_path(".syncPeriodSeconds"))]
pub struct PatroniSpec {
    /// Patroni dynamic configuration (`postgresql.parameters`, `synchronous_mode`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub dynamic_configuration: Option<FreeForm>,
    /// Patroni `ttl`: how long a leader lease lasts without renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 3))]
    pub leader_lease_duration_seconds: Option<i32>,
    /// Patroni `loop_wait`: how often each member runs its HA loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub sync_period_seconds: Option<i32>,
    /// Patroni REST API port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverSpec>,
}

/// A switchover requested with the `tusk.rs/trigger-switchover` annotation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.type) || self.type != 'Failover' || has(self.targetInstance)").message("patroni.switchover.targetInstance is required for a Failover").field_path(".targetInstance"))]
pub struct SwitchoverSpec {
    pub enabled: bool,
    /// Instance to promote (the StatefulSet name, `<cluster>-<set>-xxxx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_instance: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<SwitchoverType>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SwitchoverType {
    #[default]
    Switchover,
    Failover,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct Backups {
    pub pgbackrest: PgBackRestSpec,
}

/// Backups with pgBackRest.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.repos.all(a, self.repos.exists_one(b, a.name == b.name))").message("backups.pgbackrest.repos: repo names must be unique").field_path(".repos"))]
#[x_kube(validation = Rule::new("!has(self.manual) || self.repos.exists(r, r.name == self.manual.repoName)").message("backups.pgbackrest.manual.repoName: must name a repo in repos").field_path(".manual.repoName"))]
#[x_kube(validation = Rule::new("!has(self.restore) || self.repos.exists(r, r.name == self.restore.repoName)").message("backups.pgbackrest.restore.repoName: must name a repo in repos").field_path(".restore.repoName"))]
pub struct PgBackRestSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Secrets and ConfigMaps projected into pgBackRest's configuration directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Vec<VolumeProjection>>,
    /// Global pgBackRest options (`repo1-retention-full: "4"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<StringMap>,
    #[schemars(length(min = 1, max = 4))]
    pub repos: Vec<PgBackRestRepo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<ManualBackup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<InPlaceRestore>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_host: Option<RepoHost>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<BackupJobs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// A pgBackRest repository: exactly one of `volume`, `s3`, `gcs`, `azure`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.volume), has(self.s3), has(self.gcs), has(self.azure)].filter(x, x).size() == 1").message("repo: exactly one of volume, s3, gcs, azure"))]
pub struct PgBackRestRepo {
    /// `repo1` .. `repo4`.
    #[schemars(regex(pattern = r"^repo[1-4]$"))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<RepoVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<RepoS3>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<RepoGcs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<RepoAzure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<BackupSchedules>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepoVolume {
    pub volume_claim_spec: PersistentVolumeClaimSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct RepoS3 {
    #[schemars(length(min = 1))]
    pub bucket: String,
    #[schemars(length(min = 1))]
    pub endpoint: String,
    #[schemars(length(min = 1))]
    pub region: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct RepoGcs {
    #[schemars(length(min = 1))]
    pub bucket: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct RepoAzure {
    #[schemars(length(min = 1))]
    pub container: String,
}

/// Cron schedules (five fields, or `@daily`-style macros).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct BackupSchedules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CRON_PATTERN))]
    pub full: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CRON_PATTERN))]
    pub differential: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CRON_PATTERN))]
    pub incremental: Option<String>,
}

/// Shape of a cron schedule: five fields of numbers, names, `*`, ranges, steps and lists,
/// or one of the `@` macros. Field ranges (minute 0-59, ...) are checked by validation.
pub const CRON_PATTERN: &str = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|((\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*)(\s+((\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*)){4})$";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManualBackup {
    #[schemars(regex(pattern = r"^repo[1-4]$"))]
    pub repo_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceRestore {
    pub enabled: bool,
    #[schemars(regex(pattern = r"^repo[1-4]$"))]
    pub repo_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
}

/// Scheduling of the repo host that serves `volume` repos.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepoHost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Scheduling of backup Jobs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupJobs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60))]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// Where a new cluster's data comes from: at most one kind.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.postgresCluster) && has(self.pgbackrest))").message("dataSource: at most one of postgresCluster, pgbackrest"))]
pub struct DataSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_cluster: Option<PostgresClusterDataSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgbackrest: Option<PgBackRestDataSource>,
}

/// Clone (or PITR) from another PostgresCluster's repo.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterDataSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_namespace: Option<String>,
    #[schemars(regex(pattern = r"^repo[1-4]$"))]
    pub repo_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Restore from a pgBackRest repo with no source cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PgBackRestDataSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stanza: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Vec<VolumeProjection>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<StringMap>,
    pub repo: PgBackRestRepo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// A standby cluster following a repo, a streaming source, or both.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StandbySpec {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^repo[1-4]$"))]
    pub repo_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// Exposure of a Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.nodePort) || (has(self.type) && self.type in ['NodePort', 'LoadBalancer'])").message("nodePort is allowed only with type NodePort or LoadBalancer").field_path(".nodePort"))]
pub struct ServiceSpec {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 65535))]
    pub node_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_bouncer: Option<PgBouncerSpec>,
}

/// PgBouncer in front of the primary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PgBouncerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PgBouncerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    #[serde(
        rename = "customTLSSecret",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub custom_tls_secret: Option<SecretProjection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
}

/// pgbouncer.ini sections, as written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct PgBouncerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<StringMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<StringMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<StringMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<VolumeProjection>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct MonitoringSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgmonitor: Option<PgMonitorSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct PgMonitorSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<ExporterSpec>,
}

/// The postgres_exporter sidecar.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExporterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(
        rename = "customTLSSecret",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub custom_tls_secret: Option<SecretProjection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Vec<VolumeProjection>>,
}

// ---------------------------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------------------------

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
