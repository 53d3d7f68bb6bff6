//! Patroni's YAML configuration.
//!
//! CONTRACT (used by operator/build and by local): signatures here are stable; bodies are
//! filled in by the config work.

use tusk_api::ValidatedCluster;

/// Patroni's distributed configuration store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dcs {
    /// Kubernetes Endpoints in `namespace` (operator). Member-specific settings come from
    /// `PATRONI_*` environment variables the StatefulSet sets (see [`kubernetes_env`]).
    Kubernetes { namespace: String },
    /// etcd v3 at these `host:port` endpoints (`tusk local`).
    Etcd3 { hosts: Vec<String> },
}

/// One member's own settings (local mode writes them into the file; Kubernetes passes them as
/// environment variables).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Patroni member name (the instance name).
    pub name: String,
    /// Address PostgreSQL and the REST API listen on and advertise.
    pub host: String,
    pub data_dir: String,
    pub wal_dir: Option<String>,
    /// PostgreSQL binaries (`/usr/lib/postgresql/15/bin`), `None` = on PATH.
    pub bin_dir: Option<String>,
    pub socket_dir: String,
    pub server_tls_dir: String,
    pub replication_tls_dir: String,
}

/// The cluster-wide Patroni configuration file (ConfigMap `<c>-config`, key `patroni.yaml`).
pub fn cluster_yaml(cluster: &ValidatedCluster, dcs: &Dcs) -> String {
    let _ = (cluster, dcs);
    String::from("# filled in by the config work\n")
}

/// A whole Patroni configuration file for one member (`tusk local`).
pub fn member_yaml(cluster: &ValidatedCluster, dcs: &Dcs, member: &Member) -> String {
    let _ = (cluster, dcs, member);
    String::from("# filled in by the config work\n")
}

/// `PATRONI_*` environment variables every database container gets in Kubernetes, other than
/// those taken from the downward API (pod name and IP), which the StatefulSet builder adds.
pub fn kubernetes_env(cluster: &ValidatedCluster) -> Vec<(String, String)> {
    let _ = cluster;
    Vec::new()
}
