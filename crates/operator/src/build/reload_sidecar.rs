//! Reload sidecars: containers that make a long-running process of their pod pick up files the
//! kubelet rewrote, by sending it SIGHUP, without a restart.
//!
//! - `tls-reload` (every instance pod, [`tls_reload_container`]): renewed certificates for
//!   Patroni and PostgreSQL. Neither PostgreSQL (`ssl_cert_file`, `ssl_key_file`,
//!   `ssl_ca_file`) nor Patroni's REST server reads them again by itself; a SIGHUP to Patroni
//!   does both: Patroni reloads PostgreSQL on every SIGHUP (`pg_ctl reload`: new connections
//!   use the new files, open sessions keep theirs, the postmaster keeps running), and rebuilds
//!   its REST server's TLS context when the certificate on disk has a new serial number.
//! - `pgbackrest-config` (instance pods with backups and the repo host,
//!   `super::pgbackrest::config_reload_container`): `pgbackrest server` re-reads its
//!   configuration and certificates on SIGHUP (pgBackRest >= 2.37), which is how a new
//!   instance in the repo host's `pgN-host` list, renewed certificates or a changed
//!   `tls-server-auth` reach a running server.
//!
//! Why sidecars: the kubelet rewrites a projected Secret's or ConfigMap's files in a running
//! pod (leaf renewal at 2/3 of its life, a root rollover's bundle, the user's own renewed
//! `customTLSSecret`, a reconciled ConfigMap), but the processes reading them do not watch
//! them. The pod shares one process namespace (`shareProcessNamespace`, allowed by the
//! "restricted" Pod Security Standard) so a sidecar can see and signal the process; both run as
//! the same UID, so no capability is needed. Crunchy PGO's pods share their process namespace
//! for the same kind of reload.
//!
//! The cost of sharing the namespace: every container of the pod, a user's own sidecars
//! included, sees the others' processes and, having the same UID, their `/proc` entries. They
//! already share the pod's volumes, so nothing new becomes readable that a container of the
//! same UID could not mount anyway.
//!
//! [`RELOAD_ON_CHANGE_SCRIPT`] is the one copy of the loop; crates/operator/tests/tls_reload.rs
//! runs it against a real PostgreSQL and a real `pgbackrest server`. Pure.

use k8s_openapi::api::core::v1::{Container, EnvVar, VolumeMount};
use tusk_api::naming;
use tusk_api::ValidatedCluster;
use tusk_config::paths;

use super::pod_security::restricted_container_security_context;
use super::volumes::VOLUME_SERVER_TLS;

/// Directory whose files are watched (every regular file below it, symlinks followed).
pub const ENV_WATCH_DIR: &str = "TUSK_WATCH_DIR";
/// The process to signal is the one with a command-line argument exactly equal to this.
/// Passed in the environment, not as an argument, so the watcher never matches itself.
pub const ENV_SIGNAL_ARG: &str = "TUSK_SIGNAL_ARG";
/// Seconds between two looks at the files.
pub const ENV_POLL_SECONDS: &str = "TUSK_POLL_SECONDS";

/// How often the pod's watcher looks. The kubelet itself refreshes projected volumes only
/// about once a minute, so looking more often would only cost CPU.
pub const POLL_SECONDS: u32 = 10;

/// POSIX `sh` loop: checksum the content of every file under `$TUSK_WATCH_DIR` (following the
/// kubelet's symlinks, skipping its hidden `..data` / `..<timestamp>` directories, which hold
/// the same files again), and when it changes send SIGHUP to every process that has an
/// argument equal to `$TUSK_SIGNAL_ARG` and whose parent has not: a forked worker carries its
/// parent's arguments, and a SIGHUP ends a worker of `pgbackrest server` together with the
/// backup or WAL transfer it serves, while the parent reloads for all of them. A change is
/// remembered only once a signal was sent, so files that change before the target process
/// exists are announced when it does. Needs `find`, `sort`, `cat`, `cksum`, `tr`, `grep`,
/// `sleep` and `kill`: the Debian base of the database image has them all.
pub const RELOAD_ON_CHANGE_SCRIPT: &str = r#"set -u
watch_dir=${TUSK_WATCH_DIR:?}
signal_arg=${TUSK_SIGNAL_ARG:?}
interval=${TUSK_POLL_SECONDS:-10}
digest() {
  find -L "$watch_dir" -name '..?*' -prune -o -type f -print 2>/dev/null | LC_ALL=C sort |
    while IFS= read -r file; do cat "$file" 2>/dev/null; done | cksum
}
has_signal_arg() {
  tr '\0' '\n' 2>/dev/null < "/proc/$1/cmdline" | grep -Fqx -e "$signal_arg"
}
parent_of() {
  while read -r key value; do
    if [ "$key" = "PPid:" ]; then echo "$value"; return; fi
  done 2>/dev/null < "/proc/$1/status"
}
targets() {
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    has_signal_arg "$pid" || continue
    parent=$(parent_of "$pid")
    if [ -n "$parent" ] && has_signal_arg "$parent"; then continue; fi
    echo "$pid"
  done
}
trap 'exit 0' TERM INT
last=$(digest)
echo "reload-on-change: watching $watch_dir for the process with argument $signal_arg"
while :; do
  sleep "$interval" &
  wait $!
  now=$(digest)
  [ "$now" = "$last" ] && continue
  pids=$(targets)
  if [ -z "$pids" ]; then
    echo "reload-on-change: files changed but no process has argument $signal_arg yet; retrying"
    continue
  fi
  # One argument per PID: the word splitting is intended.
  if kill -HUP $pids; then
    echo "reload-on-change: files under $watch_dir changed; sent SIGHUP to" $pids
    last=$now
  fi
done
"#;

/// What one reload sidecar watches and whom it signals.
#[derive(Clone, Copy, Debug)]
pub struct ReloadTarget<'a> {
    /// The container's name (from `naming`).
    pub container: &'a str,
    /// The pod volume holding the watched files, mounted read-only at `watch_dir`.
    pub volume: &'a str,
    /// Where the target process reads the files, in its own container too.
    pub watch_dir: &'a str,
    /// An argument of the target process's command line that no other process of the pod
    /// has (exactly, as one argument).
    pub signal_arg: &'a str,
}

/// A reload sidecar: the database image (it has the shell tools) running
/// [`RELOAD_ON_CHANGE_SCRIPT`] for `target`.
pub fn reload_sidecar(
    cluster: &ValidatedCluster,
    image: &str,
    target: ReloadTarget<'_>,
) -> Container {
    let env = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    };
    Container {
        name: target.container.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: cluster.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            RELOAD_ON_CHANGE_SCRIPT.to_owned(),
        ]),
        env: Some(vec![
            env(ENV_WATCH_DIR, target.watch_dir.to_owned()),
            env(ENV_SIGNAL_ARG, target.signal_arg.to_owned()),
            env(ENV_POLL_SECONDS, POLL_SECONDS.to_string()),
        ]),
        security_context: Some(restricted_container_security_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: target.volume.to_owned(),
            mount_path: target.watch_dir.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// `tls-reload`: the server certificate directory (the replication certificates are inside
/// it, see `volumes::tls_volumes`), signalling the process started with Patroni's
/// configuration file.
pub fn tls_reload_container(cluster: &ValidatedCluster, image: &str) -> Container {
    reload_sidecar(
        cluster,
        image,
        ReloadTarget {
            container: naming::CONTAINER_TLS_RELOAD,
            volume: VOLUME_SERVER_TLS,
            watch_dir: paths::SERVER_TLS_DIR,
            signal_arg: paths::PATRONI_CONFIG_FILE,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_is_valid_posix_sh() {
        let status = std::process::Command::new("sh")
            .args(["-n", "-c", RELOAD_ON_CHANGE_SCRIPT])
            .status()
            .expect("run sh");
        assert!(status.success());
    }

    #[test]
    fn the_watcher_never_names_its_target_on_its_own_command_line() {
        // Targets are found by an exact argument; the watcher's own argv is `sh -c SCRIPT`.
        let watcher_argv = ["sh", "-c", RELOAD_ON_CHANGE_SCRIPT];
        for target in [
            paths::PATRONI_CONFIG_FILE,
            super::super::pgbackrest::SERVER_SIGNAL_ARG,
        ] {
            assert!(!watcher_argv.contains(&target), "{target}");
        }
        assert!(!RELOAD_ON_CHANGE_SCRIPT.contains(paths::PATRONI_CONFIG_FILE));
        assert!(!RELOAD_ON_CHANGE_SCRIPT.contains(paths::SERVER_TLS_DIR));
    }
}
