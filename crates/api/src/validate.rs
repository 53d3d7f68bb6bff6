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

fn users(errs: &mut Errors, cluster: &str, users: Option<&[PostgresUser]>) -> Vec<UserSpec> {
    let Some(users) = users.filter(|u| !u.is_empty()) else {
        // The PGO family's convention: a user and database named after the cluster.
        return DnsLabel::new(cluster)
            .map(|name| {
                vec![UserSpec {
                    databases: vec![cluster.to_owned()],
                    name,
                    options: String::new(),
                    password_type: PasswordType::AlphaNumeric,
                }]
            })
            .unwrap_or_default();
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let path = format!("spec.users[{i}]");
        if !seen.insert(u.name.clone()) {
            errs.push(format!("{path}.name"), format!("duplicate {:?}", u.name));
        }
        let name = match DnsLabel::new(u.name.clone()) {
            Ok(n) => n,
            Err(e) => {
                errs.push(format!("{path}.name"), e.to_string());
                continue;
            }
        };
        if u.name.starts_with("pg_") || u.name.starts_with("_tusk") {
            errs.push(
                format!("{path}.name"),
                "names starting with pg_ or _tusk are reserved",
            );
        }
        let mut databases = Vec::new();
        for (d, db) in u.databases.iter().flatten().enumerate() {
            if db.is_empty() || db.len() > 63 || db.contains('\0') {
                errs.push(
                    format!("{path}.databases[{d}]"),
                    "must be 1 to 63 characters without NUL",
                );
            } else if ["template0", "template1"].contains(&db.as_str()) {
                errs.push(
                    format!("{path}.databases[{d}]"),
                    format!("{db:?} is reserved"),
                );
            } else if !databases.contains(db) {
                databases.push(db.clone());
            }
        }
        let options = u
            .options
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if let Err(reason) = check_role_options(&options) {
            errs.push(format!("{path}.options"), reason);
        }
        out.push(UserSpec {
            name,
            databases,
            options,
            password_type: u.password.as_ref().map(|p| p.type_).unwrap_or_default(),
        });
    }
    out
}

/// Role attributes accepted in `options`: the `CREATE ROLE` keywords, and `CONNECTION LIMIT n`
/// / `VALID UNTIL '...'`. Anything else (`;`, `PASSWORD`, `IN ROLE`, ...) is rejected so that
/// options can be spliced into `ALTER ROLE` safely.
fn check_role_options(options: &str) -> Result<(), String> {
    const FLAGS: &[&str] = &[
        "SUPERUSER",
        "NOSUPERUSER",
        "CREATEDB",
        "NOCREATEDB",
        "CREATEROLE",
        "NOCREATEROLE",
        "INHERIT",
        "NOINHERIT",
        "LOGIN",
        "NOLOGIN",
        "REPLICATION",
        "NOREPLICATION",
        "BYPASSRLS",
        "NOBYPASSRLS",
    ];
    let words: Vec<&str> = options.split(' ').filter(|w| !w.is_empty()).collect();
    let mut i = 0;
    while i < words.len() {
        let w = words[i].to_ascii_uppercase();
        if FLAGS.contains(&w.as_str()) {
            i += 1;
        } else if w == "CONNECTION"
            && words.get(i + 1).map(|s| s.to_ascii_uppercase()) == Some("LIMIT".into())
        {
            match words.get(i + 2).map(|n| n.parse::<i64>()) {
                Some(Ok(n)) if n >= -1 => i += 3,
                _ => return Err("CONNECTION LIMIT needs an integer >= -1".to_owned()),
            }
        } else if w == "PASSWORD" || w == "ENCRYPTED" {
            return Err("PASSWORD is managed by Tusk and may not be set".to_owned());
        } else {
            return Err(format!(
                "{:?} is not a role attribute (allowed: {}, CONNECTION LIMIT n)",
                words[i],
                FLAGS.join(" ")
            ));
        }
    }
    Ok(())
}

fn patroni(errs: &mut Errors, p: Option<&PatroniSpec>, pg_port: u16) -> PatroniSettings {
    let default = PatroniSpec::default();
    let p = p.unwrap_or(&default);
    let ttl = match p.leader_lease_duration_seconds {
        None => DEFAULT_TTL_SECONDS,
        Some(t) if t >= 3 => t as u32,
        Some(t) => {
            errs.push(
                "spec.patroni.leaderLeaseDurationSeconds",
                format!("{t} must be at least 3"),
            );
            DEFAULT_TTL_SECONDS
        }
    };
    let loop_wait = match p.sync_period_seconds {
        None => DEFAULT_LOOP_WAIT_SECONDS.min(ttl.saturating_sub(2).max(1)),
        Some(s) if s >= 1 => s as u32,
        Some(s) => {
            errs.push(
                "spec.patroni.syncPeriodSeconds",
                format!("{s} must be at least 1"),
            );
            DEFAULT_LOOP_WAIT_SECONDS
        }
    };
    if loop_wait + 2 > ttl {
        errs.push(
            "spec.patroni.syncPeriodSeconds",
            format!("{loop_wait} leaves no room for retries within leaderLeaseDurationSeconds {ttl} (needs syncPeriodSeconds + 2 <= leaderLeaseDurationSeconds)"),
        );
    }
    // Patroni requires loop_wait + 2 * retry_timeout <= ttl.
    let retry_timeout = ((ttl.saturating_sub(loop_wait)) / 2).max(1);
    let port = port_field(
        errs,
        "spec.patroni.port",
        p.port,
        1024,
        DEFAULT_PATRONI_PORT,
    );
    if port == pg_port {
        errs.push("spec.patroni.port", format!("{port} is also spec.port"));
    }
    let dynamic_configuration = p.dynamic_configuration.clone().unwrap_or_default();
    check_dynamic_configuration(errs, &dynamic_configuration);
    PatroniSettings {
        leader_lease_seconds: ttl,
        sync_period_seconds: loop_wait,
        retry_timeout_seconds: retry_timeout,
        port,
        dynamic_configuration,
        switchover: p.switchover.as_ref().map(|s| SwitchoverSettings {
            enabled: s.enabled,
            target_instance: s.target_instance.clone(),
            kind: s.type_.unwrap_or_default(),
        }),
    }
}

/// Parameters Tusk owns: setting them through Patroni would break TLS, archiving or HA.
pub const RESERVED_PARAMETERS: &[&str] = &[
    "listen_addresses",
    "port",
    "data_directory",
    "hba_file",
    "ident_file",
    "ssl",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "archive_command",
    "restore_command",
    "unix_socket_directories",
];

fn check_dynamic_configuration(errs: &mut Errors, dc: &FreeForm) {
    let base = "spec.patroni.dynamicConfiguration";
    for key in ["ttl", "loop_wait", "retry_timeout"] {
        if dc.contains_key(key) {
            errs.push(
                format!("{base}.{key}"),
                "set through leaderLeaseDurationSeconds / syncPeriodSeconds instead",
            );
        }
    }
    let Some(pg) = dc.get("postgresql") else {
        return;
    };
    let Some(pg) = pg.as_object() else {
        errs.push(format!("{base}.postgresql"), "must be an object");
        return;
    };
    if let Some(params) = pg.get("parameters") {
        match params.as_object() {
            None => errs.push(format!("{base}.postgresql.parameters"), "must be an object"),
            Some(params) => {
                for (k, v) in params {
                    if RESERVED_PARAMETERS.contains(&k.as_str()) {
                        errs.push(
                            format!("{base}.postgresql.parameters.{k}"),
                            "is managed by Tusk",
                        );
                    }
                    if v.is_object() || v.is_array() {
                        errs.push(
                            format!("{base}.postgresql.parameters.{k}"),
                            "must be a string, number or boolean",
                        );
                    }
                }
            }
        }
    }
    if let Some(hba) = pg.get("pg_hba") {
        if !hba
            .as_array()
            .is_some_and(|a| a.iter().all(|l| l.is_string()))
        {
            errs.push(
                format!("{base}.postgresql.pg_hba"),
                "must be a list of strings",
            );
        }
    }
}

fn backups(errs: &mut Errors, b: &PgBackRestSpec) -> BackupSettings {
    let base = "spec.backups.pgbackrest";
    if b.repos.is_empty() {
        errs.push(format!("{base}.repos"), "at least one repo is required");
    }
    if b.repos.len() > 4 {
        errs.push(format!("{base}.repos"), "at most four repos");
    }
    let mut seen = BTreeSet::new();
    let mut repos = Vec::new();
    for (i, r) in b.repos.iter().enumerate() {
        let path = format!("{base}.repos[{i}]");
        if !seen.insert(r.name.clone()) {
            errs.push(format!("{path}.name"), format!("duplicate {:?}", r.name));
        }
        if let Some(repo) = repo(errs, &path, r) {
            repos.push(repo);
        }
    }
    let known = |name: &str| b.repos.iter().any(|r| r.name == name);
    let manual = b.manual.as_ref().map(|m| {
        if !known(&m.repo_name) {
            errs.push(
                format!("{base}.manual.repoName"),
                format!("{:?} is not a repo in {base}.repos", m.repo_name),
            );
        }
        RepoOptions {
            repo_name: m.repo_name.clone(),
            options: m.options.clone().unwrap_or_default(),
        }
    });
    let restore = b.restore.as_ref().map(|r| {
        if !known(&r.repo_name) {
            errs.push(
                format!("{base}.restore.repoName"),
                format!("{:?} is not a repo in {base}.repos", r.repo_name),
            );
        }
        let options = r.options.clone().unwrap_or_default();
        for (i, o) in options.iter().enumerate() {
            if o.starts_with("--target-action") {
                errs.push(
                    format!("{base}.restore.options[{i}]"),
                    "--target-action is managed by Tusk",
                );
            }
        }
        RestoreSettings {
            enabled: r.enabled,
            repo_name: r.repo_name.clone(),
            options,
        }
    });
    let global = string_map(b.global.as_ref());
    for k in global.keys() {
        if let Some(n) = k
            .strip_prefix("repo")
            .and_then(|rest| rest.split('-').next())
            .and_then(|n| n.parse::<u8>().ok())
        {
            if !known(&format!("repo{n}")) {
                errs.push(
                    format!("{base}.global.{k}"),
                    format!("repo{n} is not in {base}.repos"),
                );
            }
        }
    }
    BackupSettings {
        image: b.image.clone(),
        configuration: b.configuration.clone().unwrap_or_default(),
        global,
        repos,
        manual,
        restore,
        repo_host: b.repo_host.clone().unwrap_or_default(),
        jobs: b.jobs.clone().unwrap_or_default(),
        metadata: metadata_settings(errs, &format!("{base}.metadata"), b.metadata.as_ref()),
    }
}

fn string_map(m: Option<&StringMap>) -> BTreeMap<String, String> {
    m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
        .unwrap_or_default()
}

fn repo(errs: &mut Errors, path: &str, r: &PgBackRestRepo) -> Option<RepoSettings> {
    let index = match r
        .name
        .strip_prefix("repo")
        .and_then(|n| n.parse::<u8>().ok())
    {
        Some(n @ 1..=4) if r.name.len() == 5 => n,
        _ => {
            errs.push(
                format!("{path}.name"),
                format!("{:?} must be repo1..repo4", r.name),
            );
            return None;
        }
    };
    let mut kinds = Vec::new();
    if let Some(v) = &r.volume {
        check_volume(
            errs,
            &format!("{path}.volume.volumeClaimSpec"),
            &v.volume_claim_spec,
        );
        kinds.push(RepoStorage::Volume(v.volume_claim_spec.clone()));
    }
    if let Some(s) = &r.s3 {
        kinds.push(RepoStorage::S3 {
            bucket: s.bucket.clone(),
            endpoint: s.endpoint.clone(),
            region: s.region.clone(),
        });
    }
    if let Some(g) = &r.gcs {
        kinds.push(RepoStorage::Gcs {
            bucket: g.bucket.clone(),
        });
    }
    if let Some(a) = &r.azure {
        kinds.push(RepoStorage::Azure {
            container: a.container.clone(),
        });
    }
    if kinds.len() != 1 {
        errs.push(
            path.to_owned(),
            format!(
                "exactly one of volume, s3, gcs, azure is required, found {}",
                kinds.len()
            ),
        );
        return None;
    }
    let schedules = r.schedules.clone().unwrap_or_default();
    for (field, value) in [
        ("full", &schedules.full),
        ("differential", &schedules.differential),
        ("incremental", &schedules.incremental),
    ] {
        if let Some(v) = value {
            if let Err(reason) = crate::cron::check(v) {
                errs.push(format!("{path}.schedules.{field}"), reason);
            }
        }
    }
    Some(RepoSettings {
        name: r.name.clone(),
        index,
        storage: kinds.remove(0),
        schedules: Schedules {
            full: schedules.full,
            differential: schedules.differential,
            incremental: schedules.incremental,
        },
    })
}

fn data_source(errs: &mut Errors, d: &DataSource) -> Option<DataSourceSettings> {
    match (&d.postgres_cluster, &d.pgbackrest) {
        (Some(_), Some(_)) => {
            errs.push(
                "spec.dataSource",
                "at most one of postgresCluster, pgbackrest",
            );
            None
        }
        (Some(pc), None) => {
            let options = pc.options.clone().unwrap_or_default();
            check_restore_options(errs, "spec.dataSource.postgresCluster.options", &options);
            Some(DataSourceSettings::PostgresCluster {
                cluster_name: pc.cluster_name.clone(),
                cluster_namespace: pc.cluster_namespace.clone(),
                repo_name: pc.repo_name.clone(),
                options,
            })
        }
        (None, Some(pb)) => {
            let options = pb.options.clone().unwrap_or_default();
            check_restore_options(errs, "spec.dataSource.pgbackrest.options", &options);
            let repo = repo(errs, "spec.dataSource.pgbackrest.repo", &pb.repo)?;
            if matches!(repo.storage, RepoStorage::Volume(_)) {
                errs.push(
                    "spec.dataSource.pgbackrest.repo",
                    "must be a cloud repo (s3, gcs, azure)",
                );
            }
            Some(DataSourceSettings::PgBackRest {
                stanza: pb.stanza.clone().unwrap_or_else(|| "db".to_owned()),
                configuration: pb.configuration.clone().unwrap_or_default(),
                global: string_map(pb.global.as_ref()),
                repo,
                options,
            })
        }
        (None, None) => None,
    }
}

fn check_restore_options(errs: &mut Errors, path: &str, options: &[String]) {
    for (i, o) in options.iter().enumerate() {
        for managed in ["--target-action", "--pg1-path", "--stanza", "--repo="] {
            if o.starts_with(managed) {
                errs.push(
                    format!("{path}[{i}]"),
                    format!("{managed} is managed by Tusk"),
                );
            }
        }
    }
}

fn standby(
    errs: &mut Errors,
    s: &StandbySpec,
    backups: Option<&BackupSettings>,
) -> StandbySettings {
    if s.enabled && s.repo_name.is_none() && s.host.is_none() {
        errs.push(
            "spec.standby",
            "an enabled standby needs repoName, host, or both",
        );
    }
    if let Some(repo) = &s.repo_name {
        if !backups.is_some_and(|b| b.repos.iter().any(|r| &r.name == repo)) {
            errs.push(
                "spec.standby.repoName",
                format!("{repo:?} is not a repo in spec.backups.pgbackrest.repos"),
            );
        }
    }
    if s.port.is_some() && s.host.is_none() {
        errs.push("spec.standby.port", "requires spec.standby.host");
    }
    let port = s.port.and_then(|p| {
        u16::try_from(p).ok().filter(|p| *p > 0).or_else(|| {
            errs.push("spec.standby.port", format!("{p} is out of range 1..65535"));
            None
        })
    });
    StandbySettings {
        enabled: s.enabled,
        repo_name: s.repo_name.clone(),
        host: s.host.clone(),
        port,
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
