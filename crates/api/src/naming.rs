//! The one place every object name, label and annotation of a Tusk cluster comes from.
//!
//! Names Kubernetes constrains are types ([`DnsLabel`]) that can only be made valid, so an
//! object with an invalid name cannot be built. Crunchy's `internal/naming` is the model. No I/O.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// API group of every Tusk label and annotation.
pub const GROUP: &str = "tusk.rs";
/// Server-side apply field manager.
pub const FIELD_MANAGER: &str = "tusk";
/// The finalizer on every `PostgresCluster`: deletion waits until the operator has stopped the
/// instances and removed the DCS objects Patroni made itself (which nothing owns).
pub const FINALIZER: &str = "tusk.rs/finalizer";

pub const LABEL_CLUSTER: &str = "tusk.rs/cluster";
pub const LABEL_INSTANCE_SET: &str = "tusk.rs/instance-set";
pub const LABEL_INSTANCE: &str = "tusk.rs/instance";
/// `postgres` on instance PVCs/pods, `pgbackrest` on repo volumes.
pub const LABEL_DATA: &str = "tusk.rs/data";
/// `<cluster>-ha`: Patroni's scope; Patroni's Kubernetes DCS selects members by it.
pub const LABEL_PATRONI: &str = "tusk.rs/patroni";
/// Set by Patroni itself on the pod it runs in (`master` | `replica`), and by Tusk on PgBouncer.
pub const LABEL_ROLE: &str = "tusk.rs/role";
pub const LABEL_PGBACKREST: &str = "tusk.rs/pgbackrest";
pub const LABEL_PGBACKREST_BACKUP: &str = "tusk.rs/pgbackrest-backup";
pub const LABEL_PGBACKREST_REPO: &str = "tusk.rs/pgbackrest-repo";
/// On restore Jobs and their pods: the cluster restored into.
pub const LABEL_PGBACKREST_RESTORE: &str = "tusk.rs/pgbackrest-restore";
/// On the stanza-create Job and its pod.
pub const LABEL_PGBACKREST_STANZA: &str = "tusk.rs/pgbackrest-stanza";
/// `tusk.rs/pgbackrest-backup` value of the Job the backup annotation starts.
pub const BACKUP_MANUAL: &str = "manual";
/// `tusk.rs/pgbackrest-backup` value of the initial full backup taken once the stanza exists
/// (the PGO family's `pgbackrest-backup: replica-create`: new replicas can be seeded from it,
/// and point-in-time recovery works from the first hour).
pub const BACKUP_REPLICA_CREATE: &str = "replica-create";
/// On user Secrets: the role the Secret is for.
pub const LABEL_USER: &str = "tusk.rs/pguser";
/// On objects that hold a kind of data for the cluster (`pguser`, `cluster-cert`, ...).
pub const LABEL_ROLE_CLUSTER_CERT: &str = "cluster-cert";
/// What a PVC holds: `pgdata` | `pgwal`.
pub const LABEL_VOLUME_ROLE: &str = "tusk.rs/volume";

pub const ROLE_MASTER: &str = "master";
pub const ROLE_REPLICA: &str = "replica";
pub const ROLE_PGBOUNCER: &str = "pgbouncer";
pub const DATA_POSTGRES: &str = "postgres";
pub const DATA_PGBACKREST: &str = "pgbackrest";

pub const ANNOTATION_BACKUP: &str = "tusk.rs/pgbackrest-backup";
pub const ANNOTATION_RESTORE: &str = "tusk.rs/pgbackrest-restore";
/// On the stanza-create Job: a fingerprint of the pgBackRest configuration it runs with, so a
/// failed Job is replaced at once when that configuration changes.
pub const ANNOTATION_PGBACKREST_CONFIG: &str = "tusk.rs/pgbackrest-config";
/// On the stanza-create Job: which attempt it is (1, 2, ...), for the backoff between them.
pub const ANNOTATION_STANZA_ATTEMPT: &str = "tusk.rs/stanza-create-attempt";
/// On the initial (`replica-create`) backup Job: which attempt it is, for the backoff.
pub const ANNOTATION_BACKUP_ATTEMPT: &str = "tusk.rs/backup-attempt";
pub const ANNOTATION_TRIGGER_SWITCHOVER: &str = "tusk.rs/trigger-switchover";
/// On Patroni's failover Endpoints (`<scope>-failover`), beside Patroni's own `leader` and
/// `member`: the trigger value, the timeline and the lock holder a switchover request was
/// written for, so the operator knows the request as its own after a restart.
pub const ANNOTATION_SWITCHOVER_TRIGGER: &str = "tusk.rs/switchover-trigger";
pub const ANNOTATION_SWITCHOVER_TIMELINE: &str = "tusk.rs/switchover-timeline";
pub const ANNOTATION_SWITCHOVER_FROM: &str = "tusk.rs/switchover-from";
/// Hash of the rendered configuration a pod template was built from.
pub const ANNOTATION_CONFIG_HASH: &str = "tusk.rs/config-hash";
/// Hash of an object as the operator last applied it: an object whose hash and fields still
/// match is not sent again, so an unchanged cluster costs no writes.
pub const ANNOTATION_APPLIED_HASH: &str = "tusk.rs/applied-hash";
/// Version of the operator that last wrote an object. Not a reason to write: an operator
/// upgrade alone changes nothing; the next write for another reason updates it.
pub const ANNOTATION_OPERATOR_VERSION: &str = "tusk.rs/operator-version";
/// Annotation of Patroni's configuration Endpoints (`<c>-ha-config`) holding the dynamic
/// configuration as JSON; the key is Patroni's (`AbstractDCS._CONFIG`), not Tusk's.
pub const PATRONI_ANNOTATION_CONFIG: &str = "config";
/// `kubectl exec`/`logs` pick this container by default.
pub const ANNOTATION_DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

pub const APP_NAME: &str = "app.kubernetes.io/name";
pub const APP_INSTANCE: &str = "app.kubernetes.io/instance";
pub const APP_COMPONENT: &str = "app.kubernetes.io/component";
pub const APP_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const APP_PART_OF: &str = "app.kubernetes.io/part-of";

pub const CONTAINER_DATABASE: &str = "database";
pub const CONTAINER_PGBACKREST: &str = "pgbackrest";
pub const CONTAINER_PGBACKREST_CONFIG: &str = "pgbackrest-config";
/// Init container creating the directories pgBackRest writes to but does not create itself.
pub const CONTAINER_PGBACKREST_LOG_DIR: &str = "pgbackrest-log-dir";
pub const CONTAINER_EXPORTER: &str = "exporter";
pub const CONTAINER_FENCER: &str = "fencer";
pub const CONTAINER_PGBOUNCER: &str = "pgbouncer";
pub const CONTAINER_PGBOUNCER_CONFIG: &str = "pgbouncer-config";
/// Instance pod sidecar that makes Patroni and PostgreSQL re-read renewed certificate files.
pub const CONTAINER_TLS_RELOAD: &str = "tls-reload";

/// Operator CA Secret, in the operator's namespace.
pub const ROOT_CA_SECRET: &str = "tusk-root-cacert";
/// The replication role; its client certificate's CN.
/// The DNS domain of Kubernetes Services (`<svc>.<ns>.svc.cluster.local`).
pub const CLUSTER_DOMAIN: &str = "cluster.local";
pub const REPLICATION_USER: &str = "_tusk_repl";
/// CN of the operator's own client certificate: pg_ident maps exactly this name to the
/// superuser for TLS connections with a certificate (the operator's SQL step).
pub const OPERATOR_CLIENT_CN: &str = "_tusk_operator";
pub const SUPERUSER: &str = "postgres";
/// The role PgBouncer's `auth_query` logs in as: it can read password verifiers only through
/// one SECURITY DEFINER function (`tusk_config::pgbouncer`), never `pg_authid` itself.
pub const PGBOUNCER_AUTH_USER: &str = "_tusk_pgbouncer";
/// The role postgres_exporter logs in as: `pg_monitor` and nothing more.
pub const EXPORTER_USER: &str = "_tusk_exporter";

/// A DNS-1123 label: lowercase alphanumerics and `-`, at most 63 characters, starting and
/// ending alphanumeric. Only constructible valid.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsLabel(String);

/// Why a string is not a [`DnsLabel`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("{len} characters, at most {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("must consist of lowercase letters, digits and '-', and start and end with a letter or digit")]
    Charset,
}

impl DnsLabel {
    pub const MAX: usize = 63;

    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        check_label(&s, Self::MAX)?;
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `self` + `-` + `suffix`, checked again.
    pub fn with_suffix(&self, suffix: &str) -> Result<Self, NameError> {
        Self::new(format!("{}-{}", self.0, suffix))
    }
}

/// Checks `s` is a DNS-1123 label of at most `max` characters.
pub fn check_label(s: &str, max: usize) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > max {
        return Err(NameError::TooLong { len: s.len(), max });
    }
    let b = s.as_bytes();
    let ok_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-';
    if !b.iter().all(|&c| ok_char(c)) || b[0] == b'-' || b[b.len() - 1] == b'-' {
        return Err(NameError::Charset);
    }
    Ok(())
}

impl TryFrom<String> for DnsLabel {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(s)
    }
}

impl From<DnsLabel> for String {
    fn from(l: DnsLabel) -> String {
        l.0
    }
}

impl fmt::Display for DnsLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DnsLabel {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Names of one cluster's objects. Built from a cluster name validated to be short enough
/// ([`crate::types::MAX_CLUSTER_NAME`]) that every name below fits; each is formatted here and
/// nowhere else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNames {
    cluster: DnsLabel,
}

impl ClusterNames {
    pub fn new(cluster: DnsLabel) -> Self {
        Self { cluster }
    }

    pub fn cluster(&self) -> &str {
        self.cluster.as_str()
    }

    fn derived(&self, suffix: &str) -> String {
        format!("{}-{}", self.cluster, suffix)
    }

    /// Service following Patroni's leader (pods labelled `tusk.rs/role=master`).
    pub fn primary_service(&self) -> String {
        self.derived("primary")
    }
    pub fn replica_service(&self) -> String {
        self.derived("replicas")
    }
    /// Patroni's scope; its leader Endpoints and the Service over them.
    pub fn patroni_scope(&self) -> String {
        self.derived("ha")
    }
    /// Patroni's configuration Endpoints (`<scope>-config`), pre-created so it is owned.
    pub fn patroni_config_service(&self) -> String {
        self.derived("ha-config")
    }
    /// Patroni's failover key (`<scope>-failover` Endpoints): a requested switchover/failover.
    pub fn patroni_failover(&self) -> String {
        self.derived("ha-failover")
    }
    /// Patroni's synchronous replication state (`<scope>-sync` Endpoints).
    pub fn patroni_sync(&self) -> String {
        self.derived("ha-sync")
    }
    /// Headless Service giving every pod a stable DNS name.
    pub fn pods_service(&self) -> String {
        self.derived("pods")
    }
    /// ConfigMap with the cluster-wide Patroni configuration.
    pub fn patroni_config_map(&self) -> String {
        self.derived("config")
    }
    /// ServiceAccount, Role and RoleBinding the instances' Patroni runs as.
    pub fn instance_rbac(&self) -> String {
        self.derived("instance")
    }
    pub fn cluster_cert_secret(&self) -> String {
        self.derived("cluster-cert")
    }
    pub fn replication_cert_secret(&self) -> String {
        self.derived("replication-cert")
    }
    /// ConfigMap with the CA bundle PostgreSQL verifies client certificates against when the
    /// spec brings its own server certificate (`customTLSSecret`).
    pub fn client_ca_config_map(&self) -> String {
        self.derived("client-ca")
    }
    pub fn user_secret(&self, user: &str) -> String {
        self.derived(&format!("pguser-{user}"))
    }
    pub fn instance_set_pdb(&self, set: &str) -> String {
        self.derived(&format!("set-{set}"))
    }
    /// `<cluster>-<set>-<suffix>`: one StatefulSet (replicas 1) per instance.
    pub fn instance(&self, set: &str, suffix: &str) -> String {
        self.derived(&format!("{set}-{suffix}"))
    }
    pub fn pgbackrest_config_map(&self) -> String {
        self.derived("pgbackrest-config")
    }
    pub fn pgbackrest_secret(&self) -> String {
        self.derived("pgbackrest")
    }
    pub fn repo_host(&self) -> String {
        self.derived("repo-host")
    }
    pub fn repo_volume(&self, repo: &str) -> String {
        self.derived(repo)
    }
    /// ServiceAccount, Role and RoleBinding backup Jobs run as (they exec pgBackRest in the
    /// repo host or the primary).
    pub fn pgbackrest_rbac(&self) -> String {
        self.derived("pgbackrest")
    }
    /// CronJob of one schedule: `<cluster>-<repo>-<full|diff|incr>`.
    pub fn backup_cron_job(&self, repo: &str, backup_type: &str) -> String {
        self.derived(&format!("{repo}-{backup_type}"))
    }
    /// Job of the manual backup requested by annotation value `id`: `<cluster>-backup-<hash>`
    /// (the PGO family's `-backup-` plus a hash of the id, so a new value is a new Job and the
    /// same value again names the same one).
    pub fn manual_backup_job(&self, id: &str) -> String {
        self.derived(&format!("backup-{}", short_hash(id)))
    }
    /// Job of the initial full backup, taken once per stanza (`replica-create`). Never the
    /// name of a manual backup's Job: those end in five hash characters.
    pub fn replica_create_backup_job(&self) -> String {
        self.derived("backup-replica-create")
    }
    /// Job restoring a backup into the first instance's volume (clone or in-place restore).
    pub fn restore_job(&self) -> String {
        self.derived("pgbackrest-restore")
    }
    /// Job running `pgbackrest stanza-create` once the primary is up.
    pub fn stanza_create_job(&self) -> String {
        self.derived("stanza-create")
    }
    pub fn pgbouncer(&self) -> String {
        self.derived("pgbouncer")
    }
    pub fn exporter_queries_config_map(&self) -> String {
        self.derived("exporter-queries-config")
    }
    /// Secret with the exporter role's password (the PGO family's `<c>-monitoring`).
    pub fn exporter_secret(&self) -> String {
        self.derived("monitoring")
    }
    /// `<cluster>.<ns>.svc`-style host of a Service.
    pub fn service_host(&self, service: &str, namespace: &str) -> String {
        format!("{service}.{namespace}.svc")
    }
}

/// Five base-36 characters of FNV-1a over `s`: short, stable across releases, DNS-safe.
/// Not a security boundary.
fn short_hash(s: &str) -> String {
    let mut h = s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..5)
        .map(|_| {
            let d = digits[(h % 36) as usize] as char;
            h /= 36;
            d
        })
        .collect()
}

/// Names derived from one instance (`<cluster>-<set>-<suffix>`).
pub fn instance_pgdata_pvc(instance: &str) -> String {
    format!("{instance}-pgdata")
}
pub fn instance_pgwal_pvc(instance: &str) -> String {
    format!("{instance}-pgwal")
}
/// The one pod of an instance's StatefulSet.
pub fn instance_pod(instance: &str) -> String {
    format!("{instance}-0")
}
/// Stable DNS name of an instance's pod through the `-pods` headless Service.
pub fn instance_pod_host(instance: &str, pods_service: &str, namespace: &str) -> String {
    format!("{}.{pods_service}.{namespace}.svc", instance_pod(instance))
}

/// Labels every object of a cluster carries.
pub fn cluster_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_CLUSTER.to_owned(), cluster.to_owned()),
        (APP_NAME.to_owned(), "postgresql".to_owned()),
        (APP_INSTANCE.to_owned(), cluster.to_owned()),
        (APP_MANAGED_BY.to_owned(), "tusk".to_owned()),
        (APP_PART_OF.to_owned(), "tusk".to_owned()),
    ])
}

/// Selector that finds every object Tusk made for a cluster (orphan cleanup, GC checks).
pub fn cluster_selector(cluster: &str) -> String {
    format!("{LABEL_CLUSTER}={cluster}")
}

/// Labels of an instance's pods and StatefulSet.
pub fn instance_labels(cluster: &str, set: &str, instance: &str) -> BTreeMap<String, String> {
    let mut l = cluster_labels(cluster);
    l.insert(LABEL_INSTANCE_SET.to_owned(), set.to_owned());
    l.insert(LABEL_INSTANCE.to_owned(), instance.to_owned());
    l.insert(LABEL_DATA.to_owned(), DATA_POSTGRES.to_owned());
    l.insert(LABEL_PATRONI.to_owned(), format!("{cluster}-ha"));
    l.insert(APP_COMPONENT.to_owned(), "database".to_owned());
    l
}

/// Labels of the PgBouncer Deployment's pods (`tusk.rs/role=pgbouncer`, which users' affinity
/// rules select on, as in the PGO family's examples).
pub fn pgbouncer_labels(cluster: &str) -> BTreeMap<String, String> {
    let mut l = cluster_labels(cluster);
    l.insert(LABEL_ROLE.to_owned(), ROLE_PGBOUNCER.to_owned());
    l.insert(APP_COMPONENT.to_owned(), "pgbouncer".to_owned());
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked() {
        assert!(DnsLabel::new("hippo").is_ok());
        assert_eq!(DnsLabel::new(""), Err(NameError::Empty));
        assert_eq!(DnsLabel::new("Hippo"), Err(NameError::Charset));
        assert_eq!(DnsLabel::new("-hippo"), Err(NameError::Charset));
        assert_eq!(DnsLabel::new("hippo-"), Err(NameError::Charset));
        assert_eq!(
            DnsLabel::new("a".repeat(64)),
            Err(NameError::TooLong { len: 64, max: 63 })
        );
    }

    #[test]
    fn names_follow_the_pgo_family() {
        let n = ClusterNames::new(DnsLabel::new("hippo").unwrap());
        assert_eq!(n.primary_service(), "hippo-primary");
        assert_eq!(n.replica_service(), "hippo-replicas");
        assert_eq!(n.patroni_scope(), "hippo-ha");
        assert_eq!(n.pods_service(), "hippo-pods");
        assert_eq!(n.user_secret("rhino"), "hippo-pguser-rhino");
        assert_eq!(n.instance("instance1", "wm5p"), "hippo-instance1-wm5p");
        assert_eq!(n.repo_host(), "hippo-repo-host");
        assert_eq!(n.pgbackrest_config_map(), "hippo-pgbackrest-config");
        assert_eq!(n.restore_job(), "hippo-pgbackrest-restore");
        let backup = n.manual_backup_job("2024-01-01");
        assert!(backup.starts_with("hippo-backup-") && backup.len() == "hippo-backup-".len() + 5);
        assert_eq!(backup, n.manual_backup_job("2024-01-01"));
        assert_ne!(backup, n.manual_backup_job("2024-01-02"));
        assert!(check_label(&backup, DnsLabel::MAX).is_ok());
        assert_eq!(n.replica_create_backup_job(), "hippo-backup-replica-create");
        let longest = ClusterNames::new(DnsLabel::new("a".repeat(40)).unwrap());
        assert!(check_label(&longest.replica_create_backup_job(), DnsLabel::MAX).is_ok());
        assert_eq!(
            instance_pgdata_pvc("hippo-instance1-wm5p"),
            "hippo-instance1-wm5p-pgdata"
        );
    }
}
