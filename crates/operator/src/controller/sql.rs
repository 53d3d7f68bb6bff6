//! The SQL step: once objects are applied and the primary's pod is Ready, the operator
//! connects to the primary and makes its SQL state match the spec: `spec.users` roles,
//! options, passwords (set from the Secrets' `verifier`, so `pg_authid` holds exactly what
//! the Secret says) and databases, then the service roles (PgBouncer's auth role and lookup
//! function, the exporter's role). Both halves are state-based (`tusk_sql`), so a settled
//! cluster executes nothing. With backups configured it also reads `pg_stat_archiver` into
//! the shared [`ArchiverReports`], from which the backup step derives `WALArchiving`, and,
//! with an exporter, records newly finished backups in its backup-status table
//! ([`super::backup_records`]).
//!
//! How the operator gets in: TLS with `verify-full` against the cluster CA (the operator root,
//! or the `ca.crt` of `spec.customTLSSecret`) to `<c>-primary.<ns>.svc:<port>`, as
//! `postgres` authenticated by the operator's own client certificate (CN
//! [`naming::OPERATOR_CLIENT_CN`]), which pg_hba's `cert map=tusk-operator` rule admits and
//! nothing else. The certificate lives only in memory ([`OperatorIdentity`]). The address to
//! dial is asked of a [`PrimaryResolver`] so tests can point it at a server they started.
//!
//! Holds the client only to read the primary pod's readiness; writes nothing to Kubernetes
//! (the caller records [`SqlOutcome`] as the `UsersReady` condition and Events).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::Resource as _;
use kube::api::Api;
use kube::Client;
use time::OffsetDateTime;
use tusk_api::naming;
use tusk_api::ValidatedCluster;
use tusk_config::service_roles::{service_role_sql, ServiceRoleVerifiers};
use tusk_pki::{Leaf, RootCa};
use tusk_sql::{ClientCert, ConnectTarget, Pem, SqlError};

use super::archiver::{ArchiverFigures, ArchiverReports};
use super::backup_records::{record_backups, BackupRecords};
use super::dereference::Observed;
use crate::material::Material;

/// Condition type reporting the SQL step.
pub const USERS_READY: &str = "UsersReady";
/// `UsersReady` reasons.
pub const REASON_APPLIED: &str = "SqlStateApplied";
pub const REASON_WAITING: &str = "WaitingForPrimary";
/// `UsersReady` reason of a standby cluster: read-only, its roles come from its source.
pub const REASON_STANDBY: &str = "StandbyCluster";

/// Where to dial a cluster's primary: `host` is the name the server certificate must carry;
/// `hostaddr`, when set, is dialled instead of resolving `host`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlEndpoint {
    pub host: String,
    pub hostaddr: Option<IpAddr>,
    pub port: u16,
}

/// Picks the endpoint of a cluster's primary.
pub trait PrimaryResolver: Send + Sync {
    fn resolve(&self, cluster: &ValidatedCluster) -> SqlEndpoint;
}

/// In Kubernetes: the `<c>-primary` Service by its `.svc` name, which the server certificate
/// names (`material::server_dns_names`).
pub struct ServiceResolver;

impl PrimaryResolver for ServiceResolver {
    fn resolve(&self, cluster: &ValidatedCluster) -> SqlEndpoint {
        SqlEndpoint {
            host: cluster
                .names
                .service_host(&cluster.names.primary_service(), &cluster.namespace),
            hostaddr: None,
            port: cluster.port,
        }
    }
}

/// The operator's client certificate, issued from the root CA and kept in memory only (a
/// key that is never written anywhere cannot leak from a Secret). Reissued when due at 2/3
/// of its life or when the root CA changed.
#[derive(Default)]
pub struct OperatorIdentity {
    current: Mutex<Option<Leaf>>,
}

impl OperatorIdentity {
    /// The certificate to present now.
    pub fn certificate(&self, root: &RootCa, now: OffsetDateTime) -> Result<Leaf, tusk_pki::Error> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(leaf) = current.as_ref() {
            let fresh = !tusk_pki::needs_renewal(&leaf.cert_pem, now).unwrap_or(true);
            if fresh && tusk_pki::issued_by(&leaf.cert_pem, root) {
                return Ok(leaf.clone());
            }
        }
        let leaf = root.issue_client(naming::OPERATOR_CLIENT_CN, now)?;
        *current = Some(leaf.clone());
        Ok(leaf)
    }
}

/// How the SQL step ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SqlOutcome {
    /// No primary, or its pod is not Ready: nothing was tried.
    WaitingForPrimary,
    /// The server matches the spec; `executed` describes what had to change (never SQL).
    Applied { executed: Vec<String> },
    /// A standby cluster: its server is read-only and replays the roles and databases of the
    /// cluster it follows, so nothing is tried until it is promoted.
    Standby,
    /// `reason` is the failure's category (condition and Event reason); `message` never
    /// holds a password or verifier.
    Failed {
        reason: &'static str,
        message: String,
    },
}

impl SqlOutcome {
    /// `(status, reason, message)` of the `UsersReady` condition. The message does not
    /// depend on what ran, so a settled cluster's condition (and status) does not change.
    pub fn condition(&self) -> (bool, &'static str, String) {
        match self {
            SqlOutcome::WaitingForPrimary => (
                false,
                REASON_WAITING,
                "users and databases are applied once the primary is ready".into(),
            ),
            SqlOutcome::Applied { .. } => (
                true,
                REASON_APPLIED,
                "roles, passwords, databases and service roles match the spec".into(),
            ),
            SqlOutcome::Standby => (
                true,
                REASON_STANDBY,
                "a standby cluster is read-only: its roles and databases are those of the cluster \
                 it follows; spec.users is applied once it is promoted"
                    .into(),
            ),
            SqlOutcome::Failed { reason, message } => (false, reason, message.clone()),
        }
    }
}

/// Everything the SQL step needs from the reconcile.
pub struct SqlInput<'a> {
    pub cluster: &'a ValidatedCluster,
    /// Instance Patroni labelled `master`.
    pub primary: Option<&'a str>,
    pub material: &'a Material,
    pub root_ca: &'a RootCa,
    /// CA bundle the server certificate must chain to.
    pub server_ca_pem: &'a str,
    /// Where the primary's `pg_stat_archiver` figures go (clusters with backups only).
    pub archiver: &'a ArchiverReports,
    /// `status.pgbackrest.lastBackupCompletion` as the reconcile found it.
    pub last_backup_completion: Option<&'a str>,
    /// Which of those the exporter's backup-status table already holds.
    pub backup_records: &'a BackupRecords,
}

/// Runs the SQL step when the primary's pod is Ready.
pub async fn reconcile_sql(
    client: &Client,
    resolver: &dyn PrimaryResolver,
    identity: &OperatorIdentity,
    input: &SqlInput<'_>,
) -> SqlOutcome {
    let Some(primary) = input.primary else {
        return SqlOutcome::WaitingForPrimary;
    };
    if super::stanza::is_standby(input.cluster) {
        // Every statement would fail ("cannot execute CREATE ROLE in a read-only
        // transaction") on every reconcile, with a Warning each time.
        return SqlOutcome::Standby;
    }
    match pod_ready(client, &input.cluster.namespace, primary).await {
        Ok(true) => {}
        Ok(false) => return SqlOutcome::WaitingForPrimary,
        Err(e) => {
            return SqlOutcome::Failed {
                reason: "ReadPrimaryPodFailed",
                message: format!("reading the primary's pod: {e}"),
            }
        }
    }
    let target = match operator_target(resolver, identity, input) {
        Ok(target) => target,
        Err(failed) => return failed,
    };
    match apply(&target, input).await {
        Ok(executed) => SqlOutcome::Applied { executed },
        Err(error) => SqlOutcome::Failed {
            reason: failure_reason(&error),
            message: error.to_string(),
        },
    }
}

/// The primary as `postgres`, authenticated by the operator's own certificate.
fn operator_target(
    resolver: &dyn PrimaryResolver,
    identity: &OperatorIdentity,
    input: &SqlInput<'_>,
) -> Result<ConnectTarget, SqlOutcome> {
    let leaf = identity
        .certificate(input.root_ca, OffsetDateTime::now_utc())
        .map_err(|e| SqlOutcome::Failed {
            reason: "IssueCertificateFailed",
            message: format!("issuing the operator's client certificate: {e}"),
        })?;
    let endpoint = resolver.resolve(input.cluster);
    Ok(ConnectTarget {
        host: endpoint.host,
        hostaddr: endpoint.hostaddr,
        port: endpoint.port,
        socket_dir: None,
        user: naming::SUPERUSER.to_owned(),
        ca: Some(Pem::Text(input.server_ca_pem.to_owned())),
        client_cert: Some(ClientCert {
            cert: Pem::Text(leaf.cert_pem),
            key: Pem::Text(leaf.key_pem),
        }),
        password: None,
    })
}

/// Whether the WAL written before an in-place restore is safe in the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalArchived {
    /// No primary runs: there is nothing newer than the repository to lose.
    NoPrimary,
    /// The segment holding everything written so far was archived.
    Archived { segment: String },
    /// Not archived yet (or archiving fails); `message` says how far it got.
    Pending { message: String },
}

/// Before an in-place restore stops the cluster: ends the current WAL segment
/// (`pg_switch_wal()`) and waits up to `wait` for `pg_stat_archiver` to report it archived.
/// Stopping earlier would lose every transaction after the last archived segment, and the
/// restore target may lie among them. Repeated calls are cheap: switching an empty segment
/// does nothing.
pub async fn archive_current_wal(
    client: &Client,
    resolver: &dyn PrimaryResolver,
    identity: &OperatorIdentity,
    input: &SqlInput<'_>,
    wait: std::time::Duration,
) -> WalArchived {
    let ready = match input.primary {
        Some(primary) => pod_ready(client, &input.cluster.namespace, primary).await,
        None => Ok(false),
    };
    match ready {
        Ok(true) => {}
        Ok(false) => return WalArchived::NoPrimary,
        Err(e) => {
            return WalArchived::Pending {
                message: format!("reading the primary's pod: {e}"),
            }
        }
    }
    let target = match operator_target(resolver, identity, input) {
        Ok(target) => target,
        Err(failed) => {
            return WalArchived::Pending {
                message: failed.condition().2,
            }
        }
    };
    match switch_and_wait(&target, wait).await {
        Ok(outcome) => outcome,
        Err(error) => WalArchived::Pending {
            message: error.to_string(),
        },
    }
}

async fn switch_and_wait(
    target: &ConnectTarget,
    wait: std::time::Duration,
) -> Result<WalArchived, SqlError> {
    let read_error = |e: tokio_postgres::Error| SqlError::ReadState {
        what: "pg_stat_archiver",
        message: tusk_sql::describe(&e),
    };
    let client = tusk_sql::connect(target, tusk_sql::MAINTENANCE_DATABASE).await?;
    // The segment holding the switch point is the last one with data in it.
    let segment: String = client
        .query_one(
            "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal())",
            &[],
        )
        .await
        .map_err(read_error)?
        .get(0);
    let deadline = std::time::Instant::now() + wait;
    loop {
        let archived: Option<String> = client
            .query_one(
                "SELECT last_archived_wal FROM pg_catalog.pg_stat_archiver",
                &[],
            )
            .await
            .map_err(read_error)?
            .get(0);
        // Segment names of one timeline sort as their positions do.
        if archived.as_deref().is_some_and(|a| a >= segment.as_str()) {
            return Ok(WalArchived::Archived { segment });
        }
        if std::time::Instant::now() >= deadline {
            return Ok(WalArchived::Pending {
                message: format!(
                    "WAL segment {segment} is not archived yet (last archived: {})",
                    archived.as_deref().unwrap_or("none")
                ),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

async fn apply(target: &ConnectTarget, input: &SqlInput<'_>) -> Result<Vec<String>, SqlError> {
    let mut executed =
        tusk_sql::reconcile_users_with_verifiers(target, input.cluster, &input.material.verifiers)
            .await?;
    let service_passwords: BTreeMap<String, String> = crate::material::service_roles(input.cluster)
        .into_iter()
        .filter_map(|role| {
            let password = input.material.passwords.get(role)?;
            Some((role.to_owned(), password.clone()))
        })
        .collect();
    let verifiers = tusk_sql::stable_verifiers(target, &service_passwords).await?;
    let sql = service_role_sql(
        input.cluster,
        ServiceRoleVerifiers {
            pgbouncer: verifiers
                .get(naming::PGBOUNCER_AUTH_USER)
                .map(String::as_str),
            exporter: verifiers.get(naming::EXPORTER_USER).map(String::as_str),
        },
    )
    .map_err(|missing| SqlError::ReadState {
        what: "service role passwords",
        message: missing.to_string(),
    })?;
    let services = tusk_sql::apply_service_roles(target, &sql).await?;
    if services.executed > 0 {
        executed.push(format!(
            "service-role SQL ({} statements; databases: {})",
            services.executed,
            services.databases.join(", ")
        ));
    }
    // After the service roles: they create the table the backups are recorded in.
    let cluster = input.cluster;
    if let Some(completion) = input
        .backup_records
        .due(cluster, input.last_backup_completion)
    {
        match record_backups(target).await {
            Ok(rows) => {
                input.backup_records.mark(cluster, completion);
                if rows > 0 {
                    executed.push(format!(
                        "recorded the newest backups ({rows} repository/type pairs) for the exporter"
                    ));
                }
            }
            Err(error) => tracing::warn!(
                %error,
                "recording the repository's backups for the exporter failed; retried on the next reconcile"
            ),
        }
    }
    if input.cluster.backups.is_some() {
        let figures = read_archiver(target).await?;
        let cluster = input.cluster;
        input
            .archiver
            .record(&cluster.namespace, cluster.name(), figures);
    }
    Ok(executed)
}

/// The primary's `pg_stat_archiver`: whether `archive_command` is failing, read here because
/// this is the one step that talks to PostgreSQL. Times are whole seconds, which is all the
/// condition compares.
async fn read_archiver(target: &ConnectTarget) -> Result<ArchiverFigures, SqlError> {
    let read_error = |message: String| SqlError::ReadState {
        what: "pg_stat_archiver",
        message,
    };
    let client = tusk_sql::connect(target, tusk_sql::MAINTENANCE_DATABASE).await?;
    let row = client
        .query_one(
            "SELECT failed_count, \
             floor(extract(epoch FROM last_failed_time))::bigint, \
             floor(extract(epoch FROM last_archived_time))::bigint \
             FROM pg_catalog.pg_stat_archiver",
            &[],
        )
        .await
        .map_err(|e| read_error(tusk_sql::describe(&e)))?;
    let at = |epoch: Option<i64>| -> Result<_, SqlError> {
        epoch
            .map(|s| {
                k8s_openapi::jiff::Timestamp::from_second(s).map_err(|e| read_error(e.to_string()))
            })
            .transpose()
    };
    Ok(ArchiverFigures {
        failed_count: row.get(0),
        last_failed_time: at(row.get(1))?,
        last_archived_time: at(row.get(2))?,
    })
}

/// The condition/Event reason of a failed SQL step.
fn failure_reason(error: &SqlError) -> &'static str {
    match error {
        SqlError::TlsHandshake { .. } => "PrimaryTLSVerificationFailed",
        SqlError::Tls { .. } => "TLSSetupFailed",
        SqlError::Connect { .. } => "ConnectPrimaryFailed",
        SqlError::ReadState { .. } => "ReadSqlStateFailed",
        SqlError::BadVerifier { .. } => "InvalidVerifier",
        _ => "ExecuteSqlFailed",
    }
}

/// Whether the instance's pod reports the `Ready` condition.
async fn pod_ready(client: &Client, namespace: &str, instance: &str) -> Result<bool, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = pods.get_opt(&naming::instance_pod(instance)).await?;
    Ok(pod
        .and_then(|p| p.status)
        .and_then(|s| s.conditions)
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        }))
}

/// `user -> verifier` from the existing user Secrets (label [`naming::LABEL_USER`], key
/// `verifier`), for `material::user_verifiers` to keep.
pub fn existing_verifiers(observed: &Observed) -> BTreeMap<String, String> {
    let mut verifiers = BTreeMap::new();
    for ((kind, _), (_, object)) in &observed.objects {
        if kind != Secret::KIND {
            continue;
        }
        let Some(user) = object
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(naming::LABEL_USER))
        else {
            continue;
        };
        let verifier = object
            .data
            .get("data")
            .and_then(|d| d.get("verifier"))
            .and_then(|v| v.as_str())
            .and_then(|b64| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(b64).ok()
            })
            .and_then(|bytes| String::from_utf8(bytes).ok());
        if let Some(verifier) = verifier {
            verifiers.insert(user.clone(), verifier);
        }
    }
    verifiers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_certificate_is_kept_until_due_or_the_root_changes() {
        let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let root = RootCa::generate(now).unwrap();
        let identity = OperatorIdentity::default();
        let first = identity.certificate(&root, now).unwrap();
        assert_eq!(
            tusk_pki::common_name(&first.cert_pem).unwrap().as_deref(),
            Some(naming::OPERATOR_CLIENT_CN)
        );
        assert_eq!(identity.certificate(&root, now).unwrap(), first);
        let late = now + time::Duration::days(250);
        let renewed = identity.certificate(&root, late).unwrap();
        assert_ne!(renewed, first, "reissued at 2/3 of its life");
        let other_root = RootCa::generate(now).unwrap();
        let rolled = identity.certificate(&other_root, late).unwrap();
        assert!(tusk_pki::issued_by(&rolled.cert_pem, &other_root));
    }

    #[test]
    fn a_settled_condition_does_not_depend_on_what_ran() {
        let some = SqlOutcome::Applied {
            executed: vec!["create role rhino".into()],
        };
        let none = SqlOutcome::Applied { executed: vec![] };
        assert_eq!(some.condition(), none.condition());
    }
}
