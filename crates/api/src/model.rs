//! `ValidatedCluster`: the checked, defaulted form of a `PostgresCluster` that everything
//! downstream (config renderers, operator builders, local runtime) takes instead of the raw
//! spec. Made only by [`crate::validate::validate`]. No I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, LocalObjectReference, PersistentVolumeClaimSpec, ResourceRequirements,
    SecretProjection, Toleration, TopologySpreadConstraint, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::naming::{ClusterNames, DnsLabel};
use crate::types::{
    BackupJobs, FreeForm, ImagePullPolicy, PasswordType, PgBouncerConfig, RepoHost, ServiceType,
    SwitchoverType,
};

/// Default PostgreSQL port.
pub const DEFAULT_PORT: u16 = 5432;
/// Default Patroni REST API port.
pub const DEFAULT_PATRONI_PORT: u16 = 8008;
/// Default PgBouncer port.
pub const DEFAULT_PGBOUNCER_PORT: u16 = 5432;
/// postgres_exporter's port.
pub const EXPORTER_PORT: u16 = 9187;

/// Patroni timings. Tusk's defaults aim at fast, safe failover: a dead primary is replaced
/// within about one lease (`ttl`), while `loop_wait + 2 * retry_timeout <= ttl` keeps a primary
/// that merely hits a slow DCS from demoting itself. The PGO family ships 30/10/10.
pub const DEFAULT_TTL_SECONDS: u32 = 15;
pub const DEFAULT_LOOP_WAIT_SECONDS: u32 = 5;

/// How long before the leader lease expires a primary's fencer acts when the lease was not
/// renewed (`tusk_config::fence`): one poll, one unanswered question to Patroni, the kill.
pub const FENCE_MARGIN_MILLIS: u64 = 1500;

/// Patroni's `retry_timeout` for `ttl` and `loop_wait`. A primary that cannot reach the DCS
/// decides (failsafe mode, or demotion) `loop_wait + 2 * retry_timeout` after its last
/// renewal. That must come before its fencer would act, which is up to
/// [`FENCE_MARGIN_MILLIS`] plus etcd's whole-second rounding of the remaining lease before
/// the expiry: otherwise an outage of the DCS alone would get a healthy primary fenced before
/// its Patroni could enter failsafe mode. Hence `loop_wait + 2 * retry_timeout <= ttl - 3`
/// where the lease leaves room for it (at least 1 s).
pub fn retry_timeout_seconds(ttl: u32, loop_wait: u32) -> u32 {
    (ttl.saturating_sub(loop_wait).saturating_sub(3) / 2).max(1)
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedCluster {
    pub names: ClusterNames,
    pub namespace: String,
    /// UID of the PostgresCluster object, when it came from the API server (owner references).
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub postgres_version: u32,
    /// `spec.image` (the database image); `None` = the operator's default for the major.
    pub image: Option<String>,
    pub image_pull_policy: Option<ImagePullPolicy>,
    pub image_pull_secrets: Vec<LocalObjectReference>,
    pub port: u16,
    pub instance_sets: Vec<InstanceSetSpec>,
    /// Never empty: without `spec.users`, one user and database named after the cluster.
    pub users: Vec<UserSpec>,
    pub database_init_sql: Option<ConfigMapKey>,
    pub patroni: PatroniSettings,
    pub backups: Option<BackupSettings>,
    pub data_source: Option<DataSourceSettings>,
    pub standby: Option<StandbySettings>,
    pub tls: TlsSettings,
    pub primary_service: ServiceSettings,
    pub replica_service: ServiceSettings,
    pub pgbouncer: Option<PgBouncerSettings>,
    pub exporter: Option<ExporterSettings>,
    /// `spec.metadata`: on every object.
    pub metadata: MetadataSettings,
    pub shutdown: bool,
    pub paused: bool,
}

impl ValidatedCluster {
    pub fn name(&self) -> &str {
        self.names.cluster()
    }

    /// Instances the spec asks for in total (0 while shut down).
    pub fn desired_instances(&self) -> u32 {
        if self.shutdown {
            0
        } else {
            self.instance_sets.iter().map(|s| s.replicas).sum()
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetadataSettings {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl MetadataSettings {
    /// `self` overlaid with `other` (other wins).
    pub fn merged(&self, other: &MetadataSettings) -> MetadataSettings {
        let mut m = self.clone();
        m.labels.extend(other.labels.clone());
        m.annotations.extend(other.annotations.clone());
        m
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct InstanceSetSpec {
    /// Given, or its position `00`, `01`, ...
    pub name: DnsLabel,
    pub replicas: u32,
    pub resources: Option<ResourceRequirements>,
    pub data_volume: PersistentVolumeClaimSpec,
    pub wal_volume: Option<PersistentVolumeClaimSpec>,
    pub affinity: Option<Affinity>,
    pub tolerations: Vec<Toleration>,
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    pub priority_class_name: Option<String>,
    /// Set metadata overlaid on the cluster's.
    pub metadata: MetadataSettings,
    /// For the set's PodDisruptionBudget; `None` = no PDB (a single instance must stay
    /// evictable so nodes can drain).
    pub min_available: Option<IntOrString>,
    pub containers: Vec<Container>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UserSpec {
    pub name: DnsLabel,
    pub databases: Vec<String>,
    /// Role attributes as written (`CREATEDB CREATEROLE`), normalised to single spaces.
    pub options: String,
    pub password_type: PasswordType,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConfigMapKey {
    pub name: String,
    pub key: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PatroniSettings {
    /// `ttl`
    pub leader_lease_seconds: u32,
    /// `loop_wait`
    pub sync_period_seconds: u32,
    /// `retry_timeout`, derived ([`retry_timeout_seconds`]) so that Patroni decides about a
    /// lost DCS before the lease runs out and its fencer acts.
    pub retry_timeout_seconds: u32,
    pub port: u16,
    /// `spec.patroni.dynamicConfiguration` as written (merged over Tusk's by the renderer).
    pub dynamic_configuration: FreeForm,
    pub switchover: Option<SwitchoverSettings>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SwitchoverSettings {
    pub enabled: bool,
    pub target_instance: Option<String>,
    pub kind: SwitchoverType,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BackupSettings {
    pub image: Option<String>,
    pub configuration: Vec<VolumeProjection>,
    /// `global` options as strings.
    pub global: BTreeMap<String, String>,
    pub repos: Vec<RepoSettings>,
    pub manual: Option<RepoOptions>,
    pub restore: Option<RestoreSettings>,
    pub repo_host: RepoHost,
    pub jobs: BackupJobs,
    pub metadata: MetadataSettings,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RepoSettings {
    /// `repo1` .. `repo4`.
    pub name: String,
    /// 1..=4.
    pub index: u8,
    pub storage: RepoStorage,
    pub schedules: Schedules,
}

// Made once per validation and matched on by every consumer: plain variants keep those
// matches simple, and the size difference costs nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum RepoStorage {
    Volume(PersistentVolumeClaimSpec),
    S3 {
        bucket: String,
        endpoint: String,
        region: String,
    },
    Gcs {
        bucket: String,
    },
    Azure {
        container: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Schedules {
    pub full: Option<String>,
    pub differential: Option<String>,
    pub incremental: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RepoOptions {
    pub repo_name: String,
    pub options: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RestoreSettings {
    pub enabled: bool,
    pub repo_name: String,
    pub options: Vec<String>,
}

// Made once per validation and matched on by every consumer: plain variants keep those
// matches simple, and the size difference costs nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum DataSourceSettings {
    PostgresCluster {
        cluster_name: Option<String>,
        cluster_namespace: Option<String>,
        repo_name: String,
        options: Vec<String>,
        job: JobScheduling,
    },
    PgBackRest {
        stanza: String,
        configuration: Vec<VolumeProjection>,
        global: BTreeMap<String, String>,
        repo: RepoSettings,
        options: Vec<String>,
        job: JobScheduling,
    },
}

/// Resources and placement of the Job a data source's restore runs in
/// (`spec.dataSource.*.{resources, affinity, tolerations, priorityClassName}`); a field left
/// out falls back to the instance set's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobScheduling {
    pub resources: Option<ResourceRequirements>,
    pub affinity: Option<Affinity>,
    pub tolerations: Vec<Toleration>,
    pub priority_class_name: Option<String>,
}

impl DataSourceSettings {
    /// Where the restore Job of this data source runs.
    pub fn job(&self) -> &JobScheduling {
        match self {
            Self::PostgresCluster { job, .. } | Self::PgBackRest { job, .. } => job,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct StandbySettings {
    pub enabled: bool,
    pub repo_name: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsSettings {
    /// Both set or neither (validated).
    pub custom_server: Option<SecretProjection>,
    pub custom_replication: Option<SecretProjection>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceSettings {
    pub type_: ServiceType,
    pub node_port: Option<i32>,
    pub metadata: MetadataSettings,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PgBouncerSettings {
    pub image: Option<String>,
    pub replicas: u32,
    pub port: u16,
    pub config: PgBouncerConfig,
    pub resources: Option<ResourceRequirements>,
    pub affinity: Option<Affinity>,
    pub tolerations: Vec<Toleration>,
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    pub priority_class_name: Option<String>,
    pub min_available: Option<IntOrString>,
    pub custom_tls_secret: Option<SecretProjection>,
    pub metadata: MetadataSettings,
    pub service: ServiceSettings,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExporterSettings {
    pub image: Option<String>,
    pub resources: Option<ResourceRequirements>,
    pub custom_tls_secret: Option<SecretProjection>,
    pub configuration: Vec<VolumeProjection>,
}
