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
/// (`repo1-retention-full: 4`); they are kept as strings. Free-form in the CRD: each value is
/// kept as written (`x-kubernetes-preserve-unknown-fields`), because `kubectl` turns YAML 1.1
/// `y`/`on` into booleans, which an int-or-string schema would reject.
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
        json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
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
    cel,
    validation = Rule::new(format!("size(self.metadata.name) <= {MAX_CLUSTER_NAME} && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"))
        .message(format!("metadata.name must be a lowercase DNS label of at most {MAX_CLUSTER_NAME} characters that starts with a letter, so every object name derived from it fits").as_str()),
    validation = Rule::new(format!("self.spec.instances.all(i, !has(i.name) || size(self.metadata.name) + size(i.name) <= {MAX_CLUSTER_AND_SET_NAME})"))
        .message(format!("spec.instances[].name: cluster name and instance set name together must be at most {MAX_CLUSTER_AND_SET_NAME} characters, so instance names fit in 63").as_str()).field_path(".spec.instances"),
)]
#[x_kube(cel)]
#[serde(rename_all = "camelCase")]
// Cross-field rules of the spec. Every list a rule iterates is bounded (`maxItems`) and every
// string it compares is bounded (`maxLength`), so the API server's CEL cost estimate stays far
// below its budget (checked by tests/crd_schema.rs).
#[x_kube(validation = Rule::new("!has(self.customTLSSecret) || has(self.customReplicationTLSSecret)").message("spec.customReplicationTLSSecret is required when spec.customTLSSecret is set").field_path(".customReplicationTLSSecret"))]
#[x_kube(validation = Rule::new("!has(self.customReplicationTLSSecret) || has(self.customTLSSecret)").message("spec.customTLSSecret is required when spec.customReplicationTLSSecret is set").field_path(".customTLSSecret"))]
#[x_kube(validation = Rule::new("self.instances.all(a, !has(a.name) || self.instances.exists_one(b, has(b.name) && b.name == a.name))").message("spec.instances[].name: instance set names must be unique").field_path(".instances"))]
#[x_kube(validation = Rule::new("!has(self.users) || self.users.all(a, self.users.exists_one(b, b.name == a.name))").message("spec.users[].name: user names must be unique").field_path(".users"))]
#[x_kube(validation = Rule::new("!has(self.standby) || !self.standby.enabled || has(self.standby.repoName) || has(self.standby.host)").message("spec.standby: an enabled standby needs repoName, host, or both").field_path(".standby"))]
#[x_kube(validation = Rule::new("!has(self.standby) || !has(self.standby.repoName) || (has(self.backups) && self.backups.pgbackrest.repos.exists(r, r.name == self.standby.repoName))").message("spec.standby.repoName must name a repo in spec.backups.pgbackrest.repos").field_path(".standby.repoName"))]
pub struct PostgresClusterSpec {
    /// Major version of PostgreSQL. Fixed once the cluster exists: a major upgrade is its own
    /// operation (pg_upgrade), not an edit of this field.
    #[schemars(range(min = MIN_POSTGRES_VERSION, max = MAX_POSTGRES_VERSION))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.postgresVersion cannot change in place; a major upgrade is a separate operation"))]
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
#[x_kube(validation = Rule::new("!has(self.options) || !self.options.matches('(?i)PASSWORD')").message("options: PASSWORD is managed by Tusk and may not be set here").field_path(".options"))]
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
// Patroni needs `loop_wait + 2 * retry_timeout <= ttl` with `retry_timeout >= 1`; an unset
// leaderLeaseDurationSeconds means Tusk's default ttl (an unset syncPeriodSeconds is derived
// from ttl and always fits).
#[x_kube(validation = Rule::new(format!("!has(self.syncPeriodSeconds) || self.syncPeriodSeconds + 2 <= (has(self.leaderLeaseDurationSeconds) ? self.leaderLeaseDurationSeconds : {})", crate::model::DEFAULT_TTL_SECONDS)).message(format!("spec.patroni.syncPeriodSeconds + 2 must not exceed spec.patroni.leaderLeaseDurationSeconds (default {})", crate::model::DEFAULT_TTL_SECONDS).as_str()).field_path(".syncPeriodSeconds"))]
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
#[x_kube(validation = Rule::new("!has(self.type) || self.type != 'Failover' || has(self.targetInstance)").message("spec.patroni.switchover.targetInstance is required for a Failover").field_path(".targetInstance"))]
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

/// A standby cluster following a repo, a streaming source, or both.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.port) || has(self.host)").message("spec.standby.port requires spec.standby.host").field_path(".port"))]
pub struct StandbySpec {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 5), regex(pattern = REPO_NAME_PATTERN))]
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

mod status;
pub use status::*;
mod backups;
pub use backups::*;
