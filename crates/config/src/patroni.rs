//! Patroni's YAML configuration, for both runtimes.
//!
//! CONTRACT (used by operator/build and by local): the signatures of [`Dcs`], [`Member`],
//! [`cluster_yaml`], [`member_yaml`] and [`kubernetes_env`] are stable. A cluster restored
//! from a repo uses the `*_bootstrapped` variants with a [`Bootstrap`].
//!
//! One document shape serves both: Kubernetes gets [`cluster_yaml`] (ConfigMap `<c>-config`
//! key `patroni.yaml`, member name and addresses from environment variables), `tusk local` gets
//! [`member_yaml`] (the same document plus the member's own name, addresses and paths).
//!
//! What goes where follows how Patroni treats it: `bootstrap.dcs` ([`dynamic_configuration`])
//! is written to the DCS once, when the cluster is first initialised, and is shared by every
//! member; everything else is the member's local configuration, read at start and on reload.
//! Because later edits of `bootstrap.dcs` are ignored by a running cluster, whoever changes
//! `dynamicConfiguration` on a live cluster must PATCH Patroni's `/config` with
//! [`dynamic_configuration`]. Pure functions; no I/O.

use serde_json::{json, Map, Value};
use tusk_api::naming::{LABEL_CLUSTER, LABEL_PATRONI, LABEL_ROLE, ROLE_MASTER, ROLE_REPLICA};
use tusk_api::ValidatedCluster;

use crate::hba;
use crate::merge::deep_merge;
use crate::parameters::{cluster_parameters, member_parameters, restore_command};
use crate::paths::{self, tls_file, TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE};
use crate::restore::{command_line, replica_args};

#[cfg(test)]
#[path = "patroni_tests.rs"]
mod tests;

/// Patroni's distributed configuration store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dcs {
    /// Kubernetes Endpoints in `namespace` (operator). Member-specific settings come from
    /// `PATRONI_*` environment variables the StatefulSet sets (see [`kubernetes_env`]).
    Kubernetes { namespace: String },
    /// etcd at these `host:port` endpoints (`tusk local`), through `api`.
    Etcd { hosts: Vec<String>, api: EtcdApi },
}

/// Which of etcd's APIs Patroni keeps its keys in (the two are separate key spaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EtcdApi {
    /// The v2 API (`etcd:`): Patroni renews the leader key with a compare-and-swap on its own
    /// name, so a member that lost the key can never write it back.
    V2,
    /// The v3 API (`etcd3:`).
    V3,
}

/// The oldest Patroni whose etcd v3 support never overwrites another member's leader key:
/// before it, a leader whose lease expired while its Patroni stalled (frozen, starved, paused
/// by a hypervisor) granted itself a new lease and wrote the leader key unconditionally from
/// a cached view, taking it back from the member promoted meanwhile, which then demoted and
/// was rewound: every write it had acknowledged was gone (patroni/patroni#2689).
pub const PATRONI_SAFE_ETCD3: (u32, u32, u32) = (3, 0, 3);

impl EtcdApi {
    /// The API a cluster run by Patroni `version` should use: v3 where Patroni's leader key
    /// handling is safe on it, v2 before.
    pub fn for_patroni(version: (u32, u32, u32)) -> EtcdApi {
        if version >= PATRONI_SAFE_ETCD3 {
            EtcdApi::V3
        } else {
            EtcdApi::V2
        }
    }
}

/// One member's own settings (local mode writes them into the file; Kubernetes passes them as
/// environment variables).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Patroni member name (the instance name).
    pub name: String,
    /// Address PostgreSQL and the REST API listen on and advertise. Patroni refuses
    /// `127.0.0.1`/`localhost` as an advertised address, so local members use 127.0.0.2 and up.
    pub host: String,
    pub data_dir: String,
    pub wal_dir: Option<String>,
    /// PostgreSQL binaries (`/usr/lib/postgresql/15/bin`), `None` = on PATH.
    pub bin_dir: Option<String>,
    pub socket_dir: String,
    pub server_tls_dir: String,
    /// The REST API's CA file, when not `<server_tls_dir>/ca.crt` (`tusk local` names a copy
    /// after the bundle's content, so that Patroni reloads every new bundle).
    pub rest_api_ca_file: Option<String>,
    pub replication_tls_dir: String,
    /// OS user Patroni runs as; pg_ident maps it to the `postgres` role for peer auth.
    pub os_user: String,
    /// Command line Patroni runs (as that user) when PostgreSQL starts and when the member's
    /// role changes (`postgresql.callbacks.on_start` / `on_role_change`; Patroni appends the
    /// action, the new role and the scope). `tusk local` points PgBouncer at a new primary
    /// with it; Kubernetes has none, since the `<c>-primary` Service follows by itself.
    pub role_change_callback: Option<String>,
}

/// Environment variables the StatefulSet builder must set from the downward API, as
/// `(name, fieldPath)`, BEFORE the ones from [`kubernetes_env`] (which refer to them with
/// `$(...)`, and Kubernetes only expands variables defined earlier in the list):
///
/// - `PATRONI_NAME` = `metadata.name`: Patroni's member name must be the pod name, because its
///   Kubernetes DCS labels and annotates the pod of that name.
/// - `PATRONI_KUBERNETES_POD_IP` = `status.podIP`: the address Patroni writes into the leader
///   Endpoints `<c>-ha`, which the `<c>-ha` Service routes to.
pub const DOWNWARD_API_ENV: &[(&str, &str)] = &[
    ("PATRONI_NAME", "metadata.name"),
    ("PATRONI_KUBERNETES_POD_IP", "status.podIP"),
];

/// The Endpoints port name Patroni writes on the leader Endpoints `<c>-ha`; the `<c>-ha`
/// Service's port must carry the same name for the Endpoints to back it.
pub const LEADER_ENDPOINTS_PORT_NAME: &str = "postgres";

/// The cluster-wide Patroni configuration file (ConfigMap `<c>-config`, key `patroni.yaml`).
pub fn cluster_yaml(cluster: &ValidatedCluster, dcs: &Dcs) -> String {
    cluster_yaml_bootstrapped(cluster, dcs, &Bootstrap::Initdb)
}

/// [`cluster_yaml`] for a cluster whose first member is made by `bootstrap`.
pub fn cluster_yaml_bootstrapped(
    cluster: &ValidatedCluster,
    dcs: &Dcs,
    bootstrap: &Bootstrap,
) -> String {
    let major = cluster.postgres_version;
    let data_dir = paths::pgdata(major);
    let bin_dir = paths::bin_dir(major);
    let local = Local {
        name: None,
        listen_host: "*",
        connect_host: None,
        data_dir: &data_dir,
        wal_dir: None,
        bin_dir: Some(&bin_dir),
        socket_dir: paths::SOCKET_DIR,
        server_tls_dir: paths::SERVER_TLS_DIR,
        rest_api_ca_file: None,
        replication_tls_dir: paths::REPLICATION_TLS_DIR,
        os_user: paths::KUBERNETES_OS_USER,
        role_change_callback: None,
    };
    let mut doc = document(cluster, dcs, &local);
    set_bootstrap(&mut doc, bootstrap);
    render(cluster, &doc)
}

/// How the first member of a new cluster creates its data directory. Patroni runs it only
/// while the DCS has no `initialize` key for the scope; later members clone a running one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// `initdb` with Tusk's options.
    Initdb,
    /// A custom method running `command` (from [`crate::restore::restore_args`], joined by
    /// [`crate::restore::command_line`]): pgBackRest restores and writes the recovery
    /// settings (target, restore_command, `recovery.signal`), which Patroni keeps until
    /// recovery ends and it promotes the member as the new cluster's leader.
    Restore { command: String },
}

/// A whole Patroni configuration file for one member (`tusk local`).
pub fn member_yaml(cluster: &ValidatedCluster, dcs: &Dcs, member: &Member) -> String {
    member_yaml_bootstrapped(cluster, dcs, member, &Bootstrap::Initdb)
}

/// [`member_yaml`] for a cluster whose first member is made by `bootstrap`.
pub fn member_yaml_bootstrapped(
    cluster: &ValidatedCluster,
    dcs: &Dcs,
    member: &Member,
    bootstrap: &Bootstrap,
) -> String {
    let local = Local {
        name: Some(&member.name),
        listen_host: &member.host,
        connect_host: Some(&member.host),
        data_dir: &member.data_dir,
        wal_dir: member.wal_dir.as_deref(),
        bin_dir: member.bin_dir.as_deref(),
        socket_dir: &member.socket_dir,
        server_tls_dir: &member.server_tls_dir,
        rest_api_ca_file: member.rest_api_ca_file.as_deref(),
        replication_tls_dir: &member.replication_tls_dir,
        os_user: &member.os_user,
        role_change_callback: member.role_change_callback.as_deref(),
    };
    let mut doc = document(cluster, dcs, &local);
    set_bootstrap(&mut doc, bootstrap);
    render(cluster, &doc)
}

/// Name of Tusk's custom bootstrap method in `bootstrap:`.
pub const RESTORE_BOOTSTRAP_METHOD: &str = "pgbackrest_restore";

fn set_bootstrap(doc: &mut Value, bootstrap: &Bootstrap) {
    let Bootstrap::Restore { command } = bootstrap else {
        return;
    };
    doc["bootstrap"]["method"] = json!(RESTORE_BOOTSTRAP_METHOD);
    doc["bootstrap"][RESTORE_BOOTSTRAP_METHOD] = json!({
        "command": command,
        // The command names the data directory itself (`--pg1-path`).
        "no_params": true,
        // pgBackRest wrote recovery.signal and the target into postgresql.auto.conf;
        // Patroni would otherwise discard them and recovery would run to the end of the
        // archive, past the requested point in time.
        "keep_existing_recovery_conf": true,
    });
}

/// `PATRONI_*` environment variables every database container gets in Kubernetes, other than
/// those taken from the downward API ([`DOWNWARD_API_ENV`]: `PATRONI_NAME`,
/// `PATRONI_KUBERNETES_POD_IP`), which the StatefulSet builder adds first.
///
/// Members advertise the pod's stable DNS name through the headless `<c>-pods` Service
/// (`$(PATRONI_NAME).<c>-pods.<ns>.svc`): it survives pod restarts with a new IP and is the
/// name server certificates carry. That Service must publish not-ready addresses, since a
/// replica is looked up before it is ready.
pub fn kubernetes_env(cluster: &ValidatedCluster) -> Vec<(String, String)> {
    let pod_host = format!(
        "$(PATRONI_NAME).{}.{}.svc",
        cluster.names.pods_service(),
        cluster.namespace
    );
    vec![
        (
            "PATRONI_POSTGRESQL_CONNECT_ADDRESS".into(),
            format!("{pod_host}:{}", cluster.port),
        ),
        (
            "PATRONI_RESTAPI_CONNECT_ADDRESS".into(),
            format!("{pod_host}:{}", cluster.patroni.port),
        ),
    ]
}

/// The DCS configuration: `bootstrap.dcs` of the file, and the body to PATCH into Patroni's
/// `/config` when the spec changes on a running cluster.
///
/// Precedence, lowest first: Tusk's defaults, the user's `dynamicConfiguration` (deep-merged,
/// `null` deletes), then what Tusk requires: timings from `spec.patroni`, `use_pg_rewind`,
/// the composed parameters and pg_hba, and `standby_cluster` from `spec.standby` only.
pub fn dynamic_configuration(cluster: &ValidatedCluster) -> Value {
    let settings = &cluster.patroni;
    let mut dcs = json!({
        // Patroni's own default, stated so it is visible: a replica more than 1 MiB of WAL
        // behind is not promoted automatically.
        "maximum_lag_on_failover": 1_048_576,
        // Slots keep the primary's WAL until every member has it, so a restarted replica
        // resumes streaming instead of needing a re-clone.
        "postgresql": { "use_slots": true },
        // When the DCS (etcd, the Kubernetes API) is gone but every member still answers the
        // primary's REST calls, the primary keeps serving instead of demoting itself: no
        // member can be promoted meanwhile, since each one heard from the primary within the
        // lease. A primary that cannot reach every member still demotes.
        "failsafe_mode": true,
    });

    let mut user: Map<String, Value> = settings.dynamic_configuration.clone().into_iter().collect();
    if let Some(pg) = user.get_mut("postgresql").and_then(Value::as_object_mut) {
        // Composed (with Tusk's requirements) by the parameters and hba modules.
        pg.remove("parameters");
        pg.remove("pg_hba");
    }
    deep_merge(&mut dcs, &Value::Object(user));

    dcs["ttl"] = json!(settings.leader_lease_seconds);
    dcs["loop_wait"] = json!(settings.sync_period_seconds);
    dcs["retry_timeout"] = json!(settings.retry_timeout_seconds);
    // A failed primary rejoins as a replica by rewinding instead of a full re-clone.
    dcs["postgresql"]["use_pg_rewind"] = json!(true);
    dcs["postgresql"]["parameters"] = json!(cluster_parameters(cluster));
    dcs["postgresql"]["pg_hba"] = json!(hba::pg_hba(cluster));
    let object = dcs.as_object_mut().expect("the DCS document is an object");
    match standby_cluster(cluster) {
        Some(standby) => object.insert("standby_cluster".into(), standby),
        None => object.remove("standby_cluster"),
    };
    dcs
}

/// `standby_cluster` for an enabled `spec.standby`: follow the remote primary at host/port,
/// replay WAL from the named repository, or both (repository first for the initial copy, so
/// the remote primary is not loaded with a base backup). The standby leader connects to
/// host/port (for `pg_basebackup` and streaming) with `postgresql.authentication.replication`,
/// i.e. as the replication user with this cluster's replication client certificate, and
/// verifies the source with that directory's `ca.crt`: both clusters need one CA (custom TLS
/// Secrets). Without a slot name Patroni uses no slot on the source.
fn standby_cluster(cluster: &ValidatedCluster) -> Option<Value> {
    let standby = cluster.standby.as_ref().filter(|s| s.enabled)?;
    let mut section = Map::new();
    let mut methods = Vec::new();
    if let Some(repo) = &standby.repo_name {
        section.insert(
            "restore_command".into(),
            json!(restore_command(repo_index(cluster, repo))),
        );
        methods.push("pgbackrest");
    }
    if let Some(host) = &standby.host {
        section.insert("host".into(), json!(host));
        section.insert(
            "port".into(),
            json!(standby.port.unwrap_or(tusk_api::model::DEFAULT_PORT)),
        );
        methods.push("basebackup");
    }
    section.insert("create_replica_methods".into(), json!(methods));
    Some(Value::Object(section))
}

/// Whether an enabled `spec.standby` replays WAL from a repository.
fn follows_repo(cluster: &ValidatedCluster) -> bool {
    cluster
        .standby
        .as_ref()
        .is_some_and(|s| s.enabled && s.repo_name.is_some())
}

fn repo_index(cluster: &ValidatedCluster, repo: &str) -> Option<u8> {
    cluster
        .backups
        .as_ref()?
        .repos
        .iter()
        .find(|r| r.name == repo)
        .map(|r| r.index)
}

/// Member-local values; `None`s come from the environment in Kubernetes.
struct Local<'a> {
    name: Option<&'a str>,
    listen_host: &'a str,
    connect_host: Option<&'a str>,
    data_dir: &'a str,
    wal_dir: Option<&'a str>,
    bin_dir: Option<&'a str>,
    socket_dir: &'a str,
    server_tls_dir: &'a str,
    rest_api_ca_file: Option<&'a str>,
    replication_tls_dir: &'a str,
    os_user: &'a str,
    role_change_callback: Option<&'a str>,
}

fn document(cluster: &ValidatedCluster, dcs: &Dcs, local: &Local) -> Value {
    let mut doc = json!({
        "scope": cluster.names.patroni_scope(),
        "bootstrap": {
            "dcs": dynamic_configuration(cluster),
            "initdb": initdb(local),
            // Patroni 3.0's validator requires this list; it is the same policy as the DCS
            // pg_hba, which replaces pg_hba.conf before PostgreSQL first starts.
            "pg_hba": hba::pg_hba(cluster),
        },
        "restapi": restapi(cluster, local),
        "postgresql": postgresql(cluster, local),
        // Containers and local processes have no /dev/watchdog; "automatic" would only warn.
        "watchdog": { "mode": "off" },
    });
    let object = doc.as_object_mut().expect("the document is an object");
    if let Some(name) = local.name {
        object.insert("name".into(), json!(name));
    }
    match dcs {
        Dcs::Kubernetes { namespace } => {
            object.insert("kubernetes".into(), kubernetes(cluster, namespace));
        }
        Dcs::Etcd { hosts, api } => {
            let key = match api {
                EtcdApi::V2 => "etcd",
                EtcdApi::V3 => "etcd3",
            };
            object.insert(key.into(), json!({ "hosts": hosts }));
        }
    }
    doc
}

fn initdb(local: &Local) -> Value {
    let mut options = vec![
        // Detects storage corruption; also makes pg_rewind possible without wal_log_hints.
        json!("data-checksums"),
        json!({ "encoding": "UTF8" }),
        // C.UTF-8 sorts by code point: identical on every libc version, so an image upgrade
        // never silently reorders (and corrupts) text indexes.
        json!({ "locale": "C.UTF-8" }),
        // initdb's default is `trust`; pg_hba is replaced before the first start, but no
        // window should exist where it is open.
        json!({ "auth-local": "peer" }),
        json!({ "auth-host": "scram-sha-256" }),
    ];
    if let Some(wal_dir) = local.wal_dir {
        options.push(json!({ "waldir": wal_dir }));
    }
    Value::Array(options)
}

fn restapi(cluster: &ValidatedCluster, local: &Local) -> Value {
    let mut api = json!({
        "listen": format!("{}:{}", local.listen_host, cluster.patroni.port),
        "certfile": tls_file(local.server_tls_dir, TLS_CERT_FILE),
        "keyfile": tls_file(local.server_tls_dir, TLS_KEY_FILE),
        "cafile": local
            .rest_api_ca_file
            .map_or_else(|| tls_file(local.server_tls_dir, TLS_CA_FILE), str::to_owned),
        // Read-only endpoints (kubelet probes, monitoring) work without a client certificate;
        // endpoints that change state (switchover, restart, PATCH /config) demand one signed
        // by the cluster CA. Members present `certfile` when they call each other.
        "verify_client": "optional",
    });
    if let Some(host) = local.connect_host {
        api["connect_address"] = json!(format!("{host}:{}", cluster.patroni.port));
    }
    api
}

fn postgresql(cluster: &ValidatedCluster, local: &Local) -> Value {
    let replication = replication_credentials(local.replication_tls_dir);
    let mut basebackup = vec![json!({ "checkpoint": "fast" })];
    if let Some(wal_dir) = local.wal_dir {
        basebackup.push(json!({ "waldir": wal_dir }));
    }
    let mut methods = Vec::new();
    let restores_from_repo = cluster.backups.is_some() || follows_repo(cluster);
    if restores_from_repo {
        // A replica restored from the repository does not load the primary with a base
        // backup; until the first backup exists this fails and Patroni falls back.
        methods.push("pgbackrest");
    }
    methods.push("basebackup");

    let mut pg = json!({
        "listen": format!("{}:{}", local.listen_host, cluster.port),
        "data_dir": local.data_dir,
        "pgpass": format!("{}/pgpass", local.socket_dir),
        // Patroni's own connections use the socket, where peer authentication admits the
        // superuser without any password existing.
        "use_unix_socket": true,
        "authentication": {
            "superuser": { "username": tusk_api::naming::SUPERUSER },
            "replication": replication,
            // pg_rewind connects to the new primary over TCP; the replication identity (with
            // the grants Patroni gives a separate rewind user) avoids a networked superuser.
            "rewind": replication,
        },
        "parameters": member_parameters(local.socket_dir, local.server_tls_dir),
        "pg_ident": hba::pg_ident(local.os_user),
        "create_replica_methods": methods,
        "basebackup": basebackup,
    });
    if restores_from_repo {
        pg["pgbackrest"] = json!({
            "command": command_line("pgbackrest", &replica_args(local.data_dir)),
            "keep_data": true,
            "no_params": true,
        });
        if follows_repo(cluster) {
            // The leader of a repo-only standby cluster has no remote server to connect to;
            // Patroni keeps only methods marked as needing none. Not set otherwise: a member
            // of a normal cluster must never seed itself from the repo while no leader runs
            // and then race the real primary's return.
            pg["pgbackrest"]["no_leader"] = json!(true);
        }
    }
    if let Some(host) = local.connect_host {
        pg["connect_address"] = json!(format!("{host}:{}", cluster.port));
    }
    if let Some(bin_dir) = local.bin_dir {
        pg["bin_dir"] = json!(bin_dir);
    }
    if let Some(command) = local.role_change_callback {
        // on_start too: a member that starts as the leader (a restarted cluster) changes no
        // role, yet whatever follows the primary must hear of it.
        pg["callbacks"] = json!({ "on_start": command, "on_role_change": command });
    }
    pg
}

/// The replication role authenticates with its client certificate. `verify-ca`, not
/// `verify-full`: `tusk local` members are addressed by loopback IPs, which their server
/// certificates need not name; the CA check is what keeps an impostor out.
fn replication_credentials(tls_dir: &str) -> Value {
    json!({
        "username": tusk_api::naming::REPLICATION_USER,
        "sslmode": "verify-ca",
        "sslcert": tls_file(tls_dir, TLS_CERT_FILE),
        "sslkey": tls_file(tls_dir, TLS_KEY_FILE),
        "sslrootcert": tls_file(tls_dir, TLS_CA_FILE),
    })
}

fn kubernetes(cluster: &ValidatedCluster, namespace: &str) -> Value {
    let scope = cluster.names.patroni_scope();
    json!({
        "namespace": namespace,
        "labels": { LABEL_CLUSTER: cluster.name(), LABEL_PATRONI: scope },
        // Patroni adds `scope_label: scope` to its selector; naming ours keeps it from adding
        // its default `cluster-name` label.
        "scope_label": LABEL_PATRONI,
        "role_label": LABEL_ROLE,
        // Patroni 3 labels the leader `master`; Patroni 4 defaults to `primary` unless told
        // otherwise. Services select `master`, so say it for both versions.
        "leader_label_value": ROLE_MASTER,
        "standby_leader_label_value": ROLE_MASTER,
        "follower_label_value": ROLE_REPLICA,
        // Leader election on Endpoints updates the lock and the addresses of `<c>-ha` in one
        // write, so the Service never points at a former leader.
        "use_endpoints": true,
        // Go through the `kubernetes` Service. Bypassing it would need `get` on Endpoints
        // `default/kubernetes`, a cluster-wide grant the namespaced instance Role cannot give;
        // least privilege wins over surviving a broken kube-proxy.
        "bypass_api_service": false,
        "ports": [{ "name": LEADER_ENDPOINTS_PORT_NAME, "port": cluster.port }],
    })
}

fn render(cluster: &ValidatedCluster, doc: &Value) -> String {
    // Not serde_yaml: Patroni's YAML 1.1 loader would read `off`/`on` as booleans.
    let yaml = crate::yaml::to_string(doc);
    format!(
        "# Patroni configuration of PostgresCluster {}/{}, generated by Tusk. Do not edit.\n{yaml}",
        cluster.namespace,
        cluster.name()
    )
}
