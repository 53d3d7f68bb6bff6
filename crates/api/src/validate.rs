//! Validation of a `PostgresCluster` into a [`ValidatedCluster`].
//!
//! Re-checks what the CRD schema and CEL rules say (a manifest may reach `tusk local` or
//! `tusk render` without an API server) and adds what they cannot say. Every error names the
//! field path and the reason; all errors are collected, not just the first. No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::model::*;
use crate::naming::{check_label, ClusterNames, DnsLabel};
use crate::types::*;

mod backups;
mod patroni;
mod pgbouncer;
mod users;

use backups::{backups, data_source, standby};
use patroni::patroni;
pub use patroni::RESERVED_PARAMETERS;
pub use pgbouncer::PGBOUNCER_MANAGED_SETTINGS;
use users::users;

/// One problem with a manifest: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// `spec.instances[1].name`
    pub path: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Every problem found in a manifest, in field order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("; "))
    }
}

impl ValidationErrors {
    /// Paths of the errors (tests, conditions).
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            reason: reason.into(),
        });
    }
}

/// Validates `cluster` and returns its defaulted, checked form.
pub fn validate(cluster: &PostgresCluster) -> Result<ValidatedCluster, ValidationErrors> {
    let mut errs = Errors::default();
    let spec = &cluster.spec;

    let name = cluster.metadata.name.clone().unwrap_or_default();
    let cluster_name = match check_cluster_name(&name) {
        Ok(n) => Some(n),
        Err(reason) => {
            errs.push("metadata.name", reason);
            None
        }
    };
    let namespace = cluster
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());

    if !(MIN_POSTGRES_VERSION..=MAX_POSTGRES_VERSION).contains(&spec.postgres_version) {
        errs.push(
            "spec.postgresVersion",
            format!(
                "{} is not supported (supported: {MIN_POSTGRES_VERSION} to {MAX_POSTGRES_VERSION})",
                spec.postgres_version
            ),
        );
    }
    // The CRD's transition rule (`self == oldSelf`), for servers without CEL: the major the
    // cluster was created with, as the operator recorded it.
    if let Some(recorded) = cluster.status.as_ref().and_then(|s| s.postgres_version) {
        if recorded != spec.postgres_version {
            errs.push(
                "spec.postgresVersion",
                format!(
                    "cannot change in place from {recorded} (status.postgresVersion) to {}; a \
                     major upgrade is a separate operation",
                    spec.postgres_version
                ),
            );
        }
    }
    let port = port_field(&mut errs, "spec.port", spec.port, 1024, DEFAULT_PORT);

    let metadata = metadata_settings(&mut errs, "spec.metadata", spec.metadata.as_ref());
    let instance_sets = instance_sets(&mut errs, &name, spec, &metadata);
    let users = users(&mut errs, &name, spec.users.as_deref());
    let patroni = patroni(&mut errs, spec.patroni.as_ref(), port);
    let backups = spec
        .backups
        .as_ref()
        .map(|b| backups(&mut errs, &b.pgbackrest));
    let data_source = spec
        .data_source
        .as_ref()
        .and_then(|d| data_source(&mut errs, d));
    let standby = spec
        .standby
        .as_ref()
        .map(|s| standby(&mut errs, s, backups.as_ref()));
    let tls = tls(&mut errs, spec);
    let primary_service = service(&mut errs, "spec.service", spec.service.as_ref());
    let replica_service = service(
        &mut errs,
        "spec.replicaService",
        spec.replica_service.as_ref(),
    );
    let pgbouncer = spec
        .proxy
        .as_ref()
        .and_then(|p| p.pg_bouncer.as_ref())
        .map(|b| pgbouncer(&mut errs, b));
    let exporter = spec
        .monitoring
        .as_ref()
        .and_then(|m| m.pgmonitor.as_ref())
        .and_then(|p| p.exporter.as_ref())
        .map(|e| ExporterSettings {
            image: e.image.clone(),
            resources: e.resources.clone(),
            custom_tls_secret: e.custom_tls_secret.clone(),
            configuration: e.configuration.clone().unwrap_or_default(),
        });
    if let Some(init) = &spec.database_init_sql {
        if init.name.is_empty() {
            errs.push("spec.databaseInitSQL.name", "must not be empty");
        }
        if init.key.is_empty() {
            errs.push("spec.databaseInitSQL.key", "must not be empty");
        }
    }

    match (errs.0.is_empty(), cluster_name) {
        (true, Some(cluster_name)) => Ok(ValidatedCluster {
            names: ClusterNames::new(cluster_name),
            namespace,
            uid: cluster.metadata.uid.clone(),
            generation: cluster.metadata.generation,
            postgres_version: spec.postgres_version as u32,
            image: spec.image.clone(),
            image_pull_policy: spec.image_pull_policy,
            image_pull_secrets: spec.image_pull_secrets.clone().unwrap_or_default(),
            port,
            instance_sets,
            users,
            database_init_sql: spec.database_init_sql.as_ref().map(|d| ConfigMapKey {
                name: d.name.clone(),
                key: d.key.clone(),
            }),
            patroni,
            backups,
            data_source,
            standby,
            tls,
            primary_service,
            replica_service,
            pgbouncer,
            exporter,
            metadata,
            shutdown: spec.shutdown.unwrap_or(false),
            paused: spec.paused.unwrap_or(false),
        }),
        _ => Err(ValidationErrors(errs.0)),
    }
}

/// Parses a YAML manifest and validates it; parse errors are reported like field errors.
pub fn validate_yaml(yaml: &str) -> Result<ValidatedCluster, ValidationErrors> {
    let cluster = parse_yaml(yaml)?;
    validate(&cluster)
}

/// Parses a YAML manifest into a `PostgresCluster`, checking `apiVersion` and `kind`.
pub fn parse_yaml(yaml: &str) -> Result<PostgresCluster, ValidationErrors> {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| one("manifest", e))?;
    let api_version = value.get("apiVersion").and_then(|v| v.as_str());
    if api_version != Some("tusk.rs/v1beta1") {
        return Err(one(
            "apiVersion",
            format!("must be tusk.rs/v1beta1, found {api_version:?}"),
        ));
    }
    let kind = value.get("kind").and_then(|v| v.as_str());
    if kind != Some("PostgresCluster") {
        return Err(one(
            "kind",
            format!("must be PostgresCluster, found {kind:?}"),
        ));
    }
    serde_yaml::from_value(value).map_err(|e| one("spec", e))
}

fn one(path: &str, reason: impl fmt::Display) -> ValidationErrors {
    ValidationErrors(vec![FieldError {
        path: path.to_owned(),
        reason: reason.to_string(),
    }])
}

fn check_cluster_name(name: &str) -> Result<DnsLabel, String> {
    check_label(name, MAX_CLUSTER_NAME).map_err(|e| e.to_string())?;
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Err("must start with a letter (it names Services)".to_owned());
    }
    DnsLabel::new(name).map_err(|e| e.to_string())
}

fn port_field(errs: &mut Errors, path: &str, port: Option<i32>, min: i32, default: u16) -> u16 {
    match port {
        None => default,
        Some(p) if (min..=65535).contains(&p) => p as u16,
        Some(p) => {
            errs.push(path, format!("{p} is out of range {min}..65535"));
            default
        }
    }
}

fn metadata_settings(errs: &mut Errors, path: &str, m: Option<&Metadata>) -> MetadataSettings {
    let Some(m) = m else {
        return MetadataSettings::default();
    };
    let labels = m.labels.clone().unwrap_or_default();
    for (k, v) in &labels {
        if k.starts_with("tusk.rs/") {
            errs.push(
                format!("{path}.labels[{k}]"),
                "the tusk.rs/ prefix is reserved for Tusk",
            );
        }
        if let Err(reason) = check_label_key(k) {
            errs.push(format!("{path}.labels[{k}]"), reason);
        }
        if let Err(reason) = check_label_value(v) {
            errs.push(format!("{path}.labels[{k}]"), reason);
        }
    }
    let annotations = m.annotations.clone().unwrap_or_default();
    for k in annotations.keys() {
        if k.starts_with("tusk.rs/") {
            errs.push(
                format!("{path}.annotations[{k}]"),
                "the tusk.rs/ prefix is reserved for Tusk",
            );
        }
        if let Err(reason) = check_label_key(k) {
            errs.push(format!("{path}.annotations[{k}]"), reason);
        }
    }
    MetadataSettings {
        labels,
        annotations,
    }
}

/// A qualified name: optional DNS subdomain prefix and `/`, then a name of at most 63.
fn check_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 || !p.split('.').all(|part| check_label(part, 63).is_ok())
        {
            return Err(format!("key prefix {p:?} must be a DNS subdomain"));
        }
    }
    check_label_value(name).and_then(|_| {
        if name.is_empty() {
            Err("key name must not be empty".to_owned())
        } else {
            Ok(())
        }
    })
}

fn check_label_value(v: &str) -> Result<(), String> {
    if v.len() > 63 {
        return Err(format!("value {v:?} is longer than 63 characters"));
    }
    let ok = v
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
    let ends_ok = v.is_empty()
        || (v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric());
    if ok && ends_ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} must be alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        ))
    }
}

fn instance_sets(
    errs: &mut Errors,
    cluster: &str,
    spec: &PostgresClusterSpec,
    cluster_metadata: &MetadataSettings,
) -> Vec<InstanceSetSpec> {
    if spec.instances.is_empty() {
        errs.push("spec.instances", "at least one instance set is required");
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut sets = Vec::new();
    for (i, set) in spec.instances.iter().enumerate() {
        let path = format!("spec.instances[{i}]");
        let raw_name = set.name.clone().unwrap_or_else(|| format!("{i:02}"));
        if let Some(first) = seen.insert(raw_name.clone(), i) {
            errs.push(
                format!("{path}.name"),
                format!("duplicate {raw_name:?} (also spec.instances[{first}])"),
            );
        }
        let name = match DnsLabel::new(raw_name.clone()) {
            Ok(n) => n,
            Err(e) => {
                errs.push(format!("{path}.name"), e.to_string());
                continue;
            }
        };
        if cluster.len() + raw_name.len() > MAX_CLUSTER_AND_SET_NAME {
            errs.push(
                format!("{path}.name"),
                format!(
                    "cluster name and instance set name together are {} characters, at most {MAX_CLUSTER_AND_SET_NAME} allowed so instance names fit in 63",
                    cluster.len() + raw_name.len()
                ),
            );
        }
        let replicas = match set.replicas {
            None => 1,
            Some(r) if r >= 1 => r as u32,
            Some(r) => {
                errs.push(
                    format!("{path}.replicas"),
                    format!("{r} must be at least 1"),
                );
                1
            }
        };
        check_volume(
            errs,
            &format!("{path}.dataVolumeClaimSpec"),
            &set.data_volume_claim_spec,
        );
        if let Some(wal) = &set.wal_volume_claim_spec {
            check_volume(errs, &format!("{path}.walVolumeClaimSpec"), wal);
        }
        let set_metadata =
            metadata_settings(errs, &format!("{path}.metadata"), set.metadata.as_ref());
        let containers = set.containers.clone().unwrap_or_default();
        for (c, container) in containers.iter().enumerate() {
            if is_reserved_container(&container.name) {
                errs.push(
                    format!("{path}.containers[{c}].name"),
                    format!("{:?} is a container name Tusk uses", container.name),
                );
            }
        }
        let min_available = match &set.min_available {
            Some(m) => Some(m.clone()),
            None if replicas > 1 => {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
            }
            None => None,
        };
        sets.push(InstanceSetSpec {
            name,
            replicas,
            resources: set.resources.clone(),
            data_volume: set.data_volume_claim_spec.clone(),
            wal_volume: set.wal_volume_claim_spec.clone(),
            affinity: set.affinity.clone(),
            tolerations: set.tolerations.clone().unwrap_or_default(),
            topology_spread_constraints: set
                .topology_spread_constraints
                .clone()
                .unwrap_or_default(),
            priority_class_name: set.priority_class_name.clone(),
            metadata: cluster_metadata.merged(&set_metadata),
            min_available,
            containers,
        });
    }
    sets
}

fn is_reserved_container(name: &str) -> bool {
    use crate::naming::*;
    [
        CONTAINER_DATABASE,
        CONTAINER_PGBACKREST,
        CONTAINER_PGBACKREST_CONFIG,
        CONTAINER_EXPORTER,
        "replication-cert-copy",
        "postgres-startup",
    ]
    .contains(&name)
}

fn check_volume(
    errs: &mut Errors,
    path: &str,
    spec: &k8s_openapi::api::core::v1::PersistentVolumeClaimSpec,
) {
    let has_storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .is_some_and(|r| r.contains_key("storage"));
    if !has_storage {
        errs.push(
            format!("{path}.resources.requests.storage"),
            "a storage request is required",
        );
    }
    if spec.access_modes.as_ref().is_none_or(|m| m.is_empty()) {
        errs.push(
            format!("{path}.accessModes"),
            "at least one access mode is required",
        );
    }
}

fn tls(errs: &mut Errors, spec: &PostgresClusterSpec) -> TlsSettings {
    match (&spec.custom_tls_secret, &spec.custom_replication_tls_secret) {
        (Some(_), None) => errs.push(
            "spec.customReplicationTLSSecret",
            "required when spec.customTLSSecret is set",
        ),
        (None, Some(_)) => errs.push(
            "spec.customTLSSecret",
            "required when spec.customReplicationTLSSecret is set",
        ),
        _ => {}
    }
    for (path, secret) in [
        ("spec.customTLSSecret", &spec.custom_tls_secret),
        (
            "spec.customReplicationTLSSecret",
            &spec.custom_replication_tls_secret,
        ),
    ] {
        if let Some(s) = secret {
            check_tls_projection(errs, path, s);
        }
    }
    TlsSettings {
        custom_server: spec.custom_tls_secret.clone(),
        custom_replication: spec.custom_replication_tls_secret.clone(),
    }
}

/// A TLS projection must name its Secret and, if it maps keys, map all three files.
fn check_tls_projection(
    errs: &mut Errors,
    path: &str,
    s: &k8s_openapi::api::core::v1::SecretProjection,
) {
    if s.name.is_empty() {
        errs.push(format!("{path}.name"), "must not be empty");
    }
    if let Some(items) = &s.items {
        let paths: BTreeSet<&str> = items.iter().map(|i| i.path.as_str()).collect();
        for needed in ["tls.crt", "tls.key", "ca.crt"] {
            if !paths.contains(needed) {
                errs.push(
                    format!("{path}.items"),
                    format!("no item maps to {needed:?}"),
                );
            }
        }
    }
}

fn service(errs: &mut Errors, path: &str, s: Option<&ServiceSpec>) -> ServiceSettings {
    let Some(s) = s else {
        return ServiceSettings::default();
    };
    let type_ = s.type_.unwrap_or_default();
    if let Some(p) = s.node_port {
        if type_ == ServiceType::ClusterIP {
            errs.push(
                format!("{path}.nodePort"),
                "allowed only with type NodePort or LoadBalancer",
            );
        }
        if !(1024..=65535).contains(&p) {
            errs.push(format!("{path}.nodePort"), format!("{p} is out of range"));
        }
    }
    ServiceSettings {
        type_,
        node_port: s.node_port,
        metadata: metadata_settings(errs, &format!("{path}.metadata"), s.metadata.as_ref()),
    }
}

fn pgbouncer(errs: &mut Errors, b: &PgBouncerSpec) -> PgBouncerSettings {
    let base = "spec.proxy.pgBouncer";
    if let Some(config) = &b.config {
        pgbouncer::pgbouncer_config(errs, base, config);
    }
    let replicas = match b.replicas {
        None => 1,
        Some(r) if r >= 0 => r as u32,
        Some(r) => {
            errs.push(
                format!("{base}.replicas"),
                format!("{r} must not be negative"),
            );
            1
        }
    };
    PgBouncerSettings {
        image: b.image.clone(),
        replicas,
        port: port_field(
            errs,
            &format!("{base}.port"),
            b.port,
            1024,
            DEFAULT_PGBOUNCER_PORT,
        ),
        config: b.config.clone().unwrap_or_default(),
        resources: b.resources.clone(),
        affinity: b.affinity.clone(),
        tolerations: b.tolerations.clone().unwrap_or_default(),
        topology_spread_constraints: b.topology_spread_constraints.clone().unwrap_or_default(),
        priority_class_name: b.priority_class_name.clone(),
        min_available: b.min_available.clone(),
        custom_tls_secret: b.custom_tls_secret.clone(),
        metadata: metadata_settings(errs, &format!("{base}.metadata"), b.metadata.as_ref()),
        service: service(errs, &format!("{base}.service"), b.service.as_ref()),
    }
}
