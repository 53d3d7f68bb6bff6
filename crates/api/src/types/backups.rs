//! `spec.backups` (pgBackRest repos, schedules, manual backups, in-place restore) and
//! `spec.dataSource` (clone or restore into a new cluster), with their schema rules.
//! Part of [`super`]; no I/O.

use super::*;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct Backups {
    pub pgbackrest: PgBackRestSpec,
}

/// Backups with pgBackRest.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.repos.all(a, self.repos.exists_one(b, a.name == b.name))").message("spec.backups.pgbackrest.repos[].name: repo names must be unique").field_path(".repos"))]
#[x_kube(validation = Rule::new("!has(self.manual) || self.repos.exists(r, r.name == self.manual.repoName)").message("spec.backups.pgbackrest.manual.repoName must name a repo in spec.backups.pgbackrest.repos").field_path(".manual.repoName"))]
#[x_kube(validation = Rule::new("!has(self.restore) || self.repos.exists(r, r.name == self.restore.repoName)").message("spec.backups.pgbackrest.restore.repoName must name a repo in spec.backups.pgbackrest.repos").field_path(".restore.repoName"))]
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
#[x_kube(validation = Rule::new("[has(self.volume), has(self.s3), has(self.gcs), has(self.azure)].filter(x, x).size() == 1").message("repo: exactly one of volume, s3, gcs, azure is required"))]
pub struct PgBackRestRepo {
    /// `repo1` .. `repo4`.
    #[schemars(length(max = 5), regex(pattern = REPO_NAME_PATTERN))]
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
    #[schemars(length(max = 100), regex(pattern = CRON_PATTERN))]
    pub full: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), regex(pattern = CRON_PATTERN))]
    pub differential: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), regex(pattern = CRON_PATTERN))]
    pub incremental: Option<String>,
}

/// Name of a pgBackRest repo: pgBackRest numbers repos 1 to 4 (`repo1-path`, ...).
pub const REPO_NAME_PATTERN: &str = r"^repo[1-4]$";

/// Shape of a cron schedule: five fields of numbers, names, `*`, ranges, steps and lists,
/// or one of the `@` macros. Field ranges (minute 0-59, ...) are checked by validation.
pub const CRON_PATTERN: &str = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|((\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*)(\s+((\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*)){4})$";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManualBackup {
    #[schemars(length(max = 5), regex(pattern = REPO_NAME_PATTERN))]
    pub repo_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceRestore {
    pub enabled: bool,
    #[schemars(length(max = 5), regex(pattern = REPO_NAME_PATTERN))]
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
#[x_kube(validation = Rule::new("!(has(self.postgresCluster) && has(self.pgbackrest))").message("spec.dataSource: at most one of postgresCluster, pgbackrest"))]
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
    #[schemars(length(max = 5), regex(pattern = REPO_NAME_PATTERN))]
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
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
// A volume repo belongs to a cluster's repo host; without a source cluster there is none.
#[x_kube(validation = Rule::new("!has(self.repo.volume)").message("spec.dataSource.pgbackrest.repo must be a cloud repo (s3, gcs or azure)").field_path(".repo"))]
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
