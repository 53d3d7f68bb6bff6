//! `pgbackrest.conf` files, stanza [`PGBACKREST_STANZA`] (the one `archive_command` and
//! `restore_command` name). Pure; no I/O.
//!
//! - [`posix_conf`]: `tusk local`, where every member shares one directory per `volume` repo.
//! - [`instance_conf`] / [`repo_host_conf`]: Kubernetes. Instances archive to and restore from
//!   every repo; `volume` repos live on the repo host (`<c>-repo-host`), which also runs the
//!   backups, reaching each instance as `pgN-host`.
//!
//! Transport between pods (Kubernetes): pgBackRest's own TLS protocol (`repoN-host-type=tls`,
//! `pgN-host-type=tls`, a `pgbackrest server` on port [`TLS_SERVER_PORT`] in every instance pod
//! and in the repo host), as the PGO family does; no SSH daemon, no keys to distribute. Servers
//! present the cluster's server certificate (its SANs cover `*.<c>-pods.<ns>.svc`, the names
//! clients dial); clients present the replication client certificate, whose CN is fixed
//! ([`tusk_api::naming::REPLICATION_USER`], checked for custom certificates too), so
//! `tls-server-auth` can name it. Both are signed by the cluster CA, which each side verifies.
//! Replication and backups move the same data, so one client identity serves both.
//!
//! Precedence: Tusk's options first, then `spec.backups.pgbackrest.global` replaces or adds
//! (the user wins, e.g. `repo1-path` for a bucket shared by clusters); YAML booleans become
//! pgBackRest's `y`/`n`.

use std::collections::BTreeMap;

use tusk_api::model::{RepoSettings, RepoStorage};
use tusk_api::naming::REPLICATION_USER;
use tusk_api::ValidatedCluster;

use crate::parameters::PGBACKREST_STANZA;
use crate::paths;

/// Port of `pgbackrest server` in instance pods and the repo host (pgBackRest's default).
pub const TLS_SERVER_PORT: u16 = 8432;
/// pgBackRest's default `config-include-path`: every `*.conf` here is read, so Tusk's file and
/// the user's `configuration` projections (e.g. an `s3.conf` with keys) sit side by side.
pub const CONFIG_DIR: &str = "/etc/pgbackrest/conf.d";
/// Tusk's file for instances (database container and `pgbackrest` sidecar).
pub const INSTANCE_CONF_FILE: &str = "tusk-instance.conf";
/// Tusk's file for the repo host.
pub const REPO_HOST_CONF_FILE: &str = "tusk-repo-host.conf";
/// Certificates, in a sub-directory of [`CONFIG_DIR`] (pgBackRest reads only `*.conf` files
/// of the include path itself, not sub-directories).
pub const TLS_DIR: &str = "/etc/pgbackrest/conf.d/tusk-tls";
pub const TLS_CA_FILE: &str = "ca.crt";
pub const TLS_SERVER_CERT_FILE: &str = "server.crt";
pub const TLS_SERVER_KEY_FILE: &str = "server.key";
pub const TLS_CLIENT_CERT_FILE: &str = "client.crt";
pub const TLS_CLIENT_KEY_FILE: &str = "client.key";
/// Mount point of the repo volumes on the repo host; `repoN` lives in `/pgbackrest/repoN`.
pub const REPO_ROOT: &str = "/pgbackrest";
/// Instance-side pgBackRest state on the data volume: logs and the asynchronous archiving
/// spool survive a container restart, and the root filesystem is read-only. pgBackRest does
/// not create its `log-path` (every command warns that it cannot open its log file), so the
/// pods create these directories before pgBackRest runs (see the operator's
/// `build::pgbackrest::log_dir_init_container`).
pub const INSTANCE_LOG_DIR: &str = "/pgdata/pgbackrest/log";
pub const INSTANCE_SPOOL_DIR: &str = "/pgdata/pgbackrest/spool";
/// Parallel processes of asynchronous `archive-push`/`archive-get`: enough to keep up with a
/// busy primary without starving PostgreSQL of CPU.
pub const ARCHIVE_PROCESS_MAX: u32 = 2;
/// Tusk's default compression: zstd (`zst` in pgBackRest) is both faster and smaller than gz.
pub const DEFAULT_COMPRESS_TYPE: &str = "zst";

/// Tusk's defaults for the backups themselves, the same wherever a backup runs (members in
/// `tusk local`, instances or the repo host in Kubernetes); `global` overrides them.
/// - `compress-type`: [`DEFAULT_COMPRESS_TYPE`].
/// - `start-fast`: a backup starts with an immediate checkpoint instead of waiting for the
///   next scheduled one (up to `checkpoint_timeout`, 5 minutes by default): a manual backup,
///   the full backup after an in-place restore and a new replica's seed should not sit idle.
///   Set `start-fast: "n"` in `global` to spread the checkpoint's I/O instead.
fn backup_defaults(global: &mut Options) {
    global.set("compress-type", DEFAULT_COMPRESS_TYPE);
    global.set("start-fast", "y");
}

/// `repoN-path` default: `/pgbackrest/repoN`.
pub fn repo_path(repo: &RepoSettings) -> String {
    format!("{REPO_ROOT}/{}", repo.name)
}

fn tls_file(name: &str) -> String {
    format!("{TLS_DIR}/{name}")
}

/// Where this instance's PostgreSQL and pgBackRest's own files are.
pub struct PosixInstance<'a> {
    pub data_dir: &'a str,
    pub socket_dir: &'a str,
    pub port: u16,
    /// Directory holding one sub-directory per repository (`repo1`, ...).
    pub repo_root: &'a str,
    pub log_dir: &'a str,
    pub lock_dir: &'a str,
}

/// A repository `tusk local` cannot run: `gcs` (no GCS-compatible server exists to prove the
/// rendered options against, so they stay Kubernetes-only).
#[derive(Debug, PartialEq, Eq)]
pub struct NotPosix {
    /// Field path of the offending repository, e.g. `spec.backups.pgbackrest.repos[1]`.
    pub field: String,
}

/// The configuration file; `spec.backups.pgbackrest.global` options come after Tusk's own
/// so a user may tune e.g. retention, but paths and the stanza are fixed. `volume` repos are
/// directories under `repo_root`; `s3` and `azure` repos get the same options as on
/// Kubernetes (credentials come from the `configuration` projections, which the runtime
/// appends to this file as pgBackRest appends its include directory). `gcs` is refused.
pub fn posix_conf(
    cluster: &ValidatedCluster,
    instance: &PosixInstance,
) -> Result<String, NotPosix> {
    let Some(backups) = &cluster.backups else {
        return Ok(String::new());
    };
    let mut global = Options::default();
    global.set("log-path", instance.log_dir);
    global.set("lock-path", instance.lock_dir);
    // Logs of archive-push go to PostgreSQL's stderr; info keeps failures visible.
    global.set("log-level-stderr", "info");
    global.set("log-level-file", "detail");
    // Several members share the repository directory; links would point into one member's
    // data directory.
    global.set("link-all", "n");
    backup_defaults(&mut global);
    for (position, repo) in backups.repos.iter().enumerate() {
        match &repo.storage {
            RepoStorage::Volume(_) => global.set(
                format!("repo{}-path", repo.index),
                format!("{}/{}", instance.repo_root, repo.name),
            ),
            RepoStorage::Gcs { .. } => {
                return Err(NotPosix {
                    field: format!("spec.backups.pgbackrest.repos[{position}]"),
                })
            }
            RepoStorage::S3 { .. } | RepoStorage::Azure { .. } => {
                object_store_options(&mut global, repo)
            }
        }
    }
    user_globals(&mut global, &backups.global);
    let mut stanza = Options::default();
    stanza.set("pg1-path", instance.data_dir);
    stanza.set("pg1-socket-path", instance.socket_dir);
    stanza.set("pg1-port", instance.port.to_string());
    stanza.set("pg1-user", tusk_api::naming::SUPERUSER);
    Ok(format!(
        "# pgBackRest configuration of PostgresCluster {}/{}, generated by Tusk. Do not edit.\n[global]\n{}\n[{PGBACKREST_STANZA}]\n{}",
        cluster.namespace,
        cluster.name(),
        global.render(),
        stanza.render()
    ))
}

/// The file `tusk local` restores a `spec.dataSource.pgbackrest` from: only the source repo
/// (`repo`, whose `field` names it in errors), the source's `global` options and its
/// `stanza`, with this instance's data directory as `pg1-path`. The source cluster need not
/// exist. A `gcs` (or `volume`) source is refused like in [`posix_conf`].
pub fn data_source_conf(
    stanza: &str,
    repo: &RepoSettings,
    user_global: &BTreeMap<String, String>,
    instance: &PosixInstance,
    field: &str,
) -> Result<String, NotPosix> {
    if !matches!(
        repo.storage,
        RepoStorage::S3 { .. } | RepoStorage::Azure { .. }
    ) {
        return Err(NotPosix {
            field: field.to_owned(),
        });
    }
    let mut global = Options::default();
    global.set("log-path", instance.log_dir);
    global.set("lock-path", instance.lock_dir);
    object_store_options(&mut global, repo);
    user_globals(&mut global, user_global);
    let mut section = Options::default();
    section.set("pg1-path", instance.data_dir);
    Ok(format!(
        "# pgBackRest configuration of a dataSource.pgbackrest restore, generated by Tusk. Do not edit.\n[global]\n{}\n[{stanza}]\n{}",
        global.render(),
        section.render()
    ))
}

/// Ordered `key=value` options of one section; setting a key again replaces it in place.
#[derive(Default)]
struct Options(Vec<(String, String)>);

impl Options {
    fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(existing) => existing.1 = value,
            None => self.0.push((key, value)),
        }
    }

    fn render(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }
}

/// A user value as pgBackRest spells it: YAML booleans (`true`, `false`) become `y`/`n`.
fn user_value(value: &str) -> &str {
    match value {
        "true" => "y",
        "false" => "n",
        other => other,
    }
}

/// Where a repo's options are written from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// An instance: `volume` repos are on the repo host, reached over TLS.
    Instance,
    RepoHost,
}

/// `repoN-*` options of one repo.
fn repo_options(global: &mut Options, repo: &RepoSettings, side: Side, repo_host: &str) {
    let n = repo.index;
    match (&repo.storage, side) {
        (RepoStorage::Volume(_), Side::Instance) => {
            global.set(format!("repo{n}-host"), repo_host);
            global.set(format!("repo{n}-host-type"), "tls");
            global.set(format!("repo{n}-host-port"), TLS_SERVER_PORT.to_string());
            global.set(format!("repo{n}-host-ca-file"), tls_file(TLS_CA_FILE));
            global.set(
                format!("repo{n}-host-cert-file"),
                tls_file(TLS_CLIENT_CERT_FILE),
            );
            global.set(
                format!("repo{n}-host-key-file"),
                tls_file(TLS_CLIENT_KEY_FILE),
            );
        }
        (RepoStorage::Volume(_), Side::RepoHost) => global.set(format!("repo{n}-type"), "posix"),
        (RepoStorage::S3 { .. } | RepoStorage::Gcs { .. } | RepoStorage::Azure { .. }, _) => {
            object_store_options(global, repo)
        }
    }
    // On an instance the path of a volume repo is the repo host's, which pgBackRest asks the
    // remote for; writing it keeps both sides' files alike for a person reading them.
    global.set(format!("repo{n}-path"), repo_path(repo));
}

/// `repoN-*` options of an object-store repo, the same in both runtimes (so a bucket written
/// by one is read by the other): type, bucket or container, and the default path
/// `/pgbackrest/repoN` inside it. Endpoint port, URI style and CA file are the user's
/// (`global`), as are credentials (`configuration` projections).
fn object_store_options(global: &mut Options, repo: &RepoSettings) {
    let n = repo.index;
    match &repo.storage {
        RepoStorage::S3 {
            bucket,
            endpoint,
            region,
        } => {
            global.set(format!("repo{n}-type"), "s3");
            global.set(format!("repo{n}-s3-bucket"), bucket);
            global.set(format!("repo{n}-s3-endpoint"), endpoint);
            global.set(format!("repo{n}-s3-region"), region);
        }
        RepoStorage::Gcs { bucket } => {
            global.set(format!("repo{n}-type"), "gcs");
            global.set(format!("repo{n}-gcs-bucket"), bucket);
        }
        RepoStorage::Azure { container } => {
            global.set(format!("repo{n}-type"), "azure");
            global.set(format!("repo{n}-azure-container"), container);
        }
        RepoStorage::Volume(_) => return,
    }
    global.set(format!("repo{n}-path"), repo_path(repo));
}

/// The TLS server options of `pgbackrest server` (instances and repo host).
fn tls_server_options(global: &mut Options) {
    // Every interface: other pods connect through the pod IP.
    global.set("tls-server-address", "0.0.0.0");
    global.set("tls-server-port", TLS_SERVER_PORT.to_string());
    global.set("tls-server-ca-file", tls_file(TLS_CA_FILE));
    global.set("tls-server-cert-file", tls_file(TLS_SERVER_CERT_FILE));
    global.set("tls-server-key-file", tls_file(TLS_SERVER_KEY_FILE));
    global.set(
        "tls-server-auth",
        format!("{REPLICATION_USER}={PGBACKREST_STANZA}"),
    );
}

fn user_globals(global: &mut Options, user: &BTreeMap<String, String>) {
    for (key, value) in user {
        global.set(key.clone(), user_value(value));
    }
}

fn document(cluster: &ValidatedCluster, role: &str, sections: &[(&str, &Options)]) -> String {
    let mut out = format!(
        "# pgBackRest configuration ({role}) of PostgresCluster {}/{}, generated by Tusk. Do not edit.\n",
        cluster.namespace,
        cluster.name()
    );
    for (i, (name, options)) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("[{name}]\n{}", options.render()));
    }
    out
}

/// Whether any repo is a `volume` (and so a repo host is needed).
pub fn has_volume_repo(cluster: &ValidatedCluster) -> bool {
    cluster.backups.as_ref().is_some_and(|b| {
        b.repos
            .iter()
            .any(|r| matches!(r.storage, RepoStorage::Volume(_)))
    })
}

/// `[db]` options naming the local PostgreSQL of an instance pod.
fn local_pg(cluster: &ValidatedCluster, stanza: &mut Options, n: usize) {
    stanza.set(
        format!("pg{n}-path"),
        paths::pgdata(cluster.postgres_version),
    );
    stanza.set(format!("pg{n}-port"), cluster.port.to_string());
    stanza.set(format!("pg{n}-socket-path"), paths::SOCKET_DIR);
}

/// The instances' file ([`INSTANCE_CONF_FILE`]): archiving (asynchronous) to every repo, the
/// TLS server the repo host's backups reach, and the local PostgreSQL as `pg1`. `repo_host` is
/// the repo host pod's DNS name (used only for `volume` repos). `None` without backups.
pub fn instance_conf(cluster: &ValidatedCluster, repo_host: &str) -> Option<String> {
    let backups = cluster.backups.as_ref()?;
    let mut global = Options::default();
    global.set("log-path", INSTANCE_LOG_DIR);
    // Archiving hands segments to a background process and returns: a slow repo does not
    // hold up WAL recycling one segment at a time.
    global.set("archive-async", "y");
    global.set("spool-path", INSTANCE_SPOOL_DIR);
    backup_defaults(&mut global);
    for repo in &backups.repos {
        repo_options(&mut global, repo, Side::Instance, repo_host);
    }
    tls_server_options(&mut global);
    user_globals(&mut global, &backups.global);
    let mut push = Options::default();
    push.set("process-max", ARCHIVE_PROCESS_MAX.to_string());
    let mut get = Options::default();
    get.set("process-max", ARCHIVE_PROCESS_MAX.to_string());
    let mut stanza = Options::default();
    local_pg(cluster, &mut stanza, 1);
    Some(document(
        cluster,
        "instance",
        &[
            ("global", &global),
            ("global:archive-get", &get),
            ("global:archive-push", &push),
            (PGBACKREST_STANZA, &stanza),
        ],
    ))
}

/// The repo host's `log-path`: `log` in the first `volume` repo (`/pgbackrest/repo1/log`), the
/// only writable, persistent place of the repo host, as in the PGO family. Like
/// [`INSTANCE_LOG_DIR`] it is created by the pod before pgBackRest runs.
pub fn repo_host_log_dir(first_volume_repo: &RepoSettings) -> String {
    format!("{}/log", repo_path(first_volume_repo))
}

/// The repo host's file ([`REPO_HOST_CONF_FILE`]): `volume` repos as local POSIX paths, cloud
/// repos as on instances, and every instance as `pgN-host` over TLS so backups follow the
/// primary wherever Patroni put it. `instance_hosts` are the instance pods' DNS names, in a
/// stable order. `None` without a `volume` repo (there is no repo host then).
pub fn repo_host_conf(cluster: &ValidatedCluster, instance_hosts: &[String]) -> Option<String> {
    let backups = cluster.backups.as_ref()?;
    let first_volume = backups
        .repos
        .iter()
        .find(|r| matches!(r.storage, RepoStorage::Volume(_)))?;
    let mut global = Options::default();
    global.set("log-path", repo_host_log_dir(first_volume));
    backup_defaults(&mut global);
    for repo in &backups.repos {
        repo_options(&mut global, repo, Side::RepoHost, "");
    }
    tls_server_options(&mut global);
    user_globals(&mut global, &backups.global);
    let mut stanza = Options::default();
    for (i, host) in instance_hosts.iter().enumerate() {
        let n = i + 1;
        stanza.set(format!("pg{n}-host"), host);
        stanza.set(format!("pg{n}-host-type"), "tls");
        stanza.set(format!("pg{n}-host-port"), TLS_SERVER_PORT.to_string());
        stanza.set(format!("pg{n}-host-ca-file"), tls_file(TLS_CA_FILE));
        stanza.set(
            format!("pg{n}-host-cert-file"),
            tls_file(TLS_CLIENT_CERT_FILE),
        );
        stanza.set(
            format!("pg{n}-host-key-file"),
            tls_file(TLS_CLIENT_KEY_FILE),
        );
        local_pg(cluster, &mut stanza, n);
    }
    Some(document(
        cluster,
        "repo host",
        &[("global", &global), (PGBACKREST_STANZA, &stanza)],
    ))
}

#[cfg(test)]
#[path = "pgbackrest_tests.rs"]
mod tests;
