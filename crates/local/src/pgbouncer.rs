//! PgBouncer in `tusk local` (`spec.proxy.pgBouncer`): ONE process on the cluster network's
//! reserved address (`state::PGBOUNCER_HOST`, e.g. `127.0.0.250`) and the spec's port, with
//! `pgbouncer.ini` and the auth file rendered by `tusk_config::pgbouncer` (the operator's
//! renderer), a server certificate from the local CA (IP SAN), and TLS verify-full to
//! PostgreSQL. Files live in `<state>/pgbouncer/`; the process is found again by pid like a
//! member's. Touches that directory and the PgBouncer process only.
//!
//! Following the primary: the Debian PgBouncer (1.18) has no `target_session_attrs` and treats
//! a host list as round-robin, so the `*` database names the current primary's address. `up`
//! and `tusk local switchover` rewrite it and RELOAD (SIGHUP). An unplanned failover needs no
//! `tusk` at all: every member's Patroni runs [`follow_callback`]'s script when its member
//! becomes the leader, which puts the ini `up` rendered for that member as primary in place
//! and RELOADs PgBouncer. A RELOAD keeps client connections; server connections to the old
//! primary are closed by the demotion (or the crash) itself.
//!
//! Changes of `config` are applied by RELOAD too, never a restart, so open client sessions
//! survive; only a new listen address/port (or a dead process) starts PgBouncer anew.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use tusk_api::ValidatedCluster;
use tusk_config::paths::{TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE};
use tusk_config::pgbouncer::{self as config, Files, Listen, Upstream};

use crate::error::{io, Result};
use crate::members::Context;
use crate::secret::Endpoint;
use crate::state::{Layout, MemberRecord, State};
use crate::system::{self, RunAs};

/// How long a starting PgBouncer may take to listen.
const START_LIMIT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Common name of PgBouncer's server certificate.
const COMMON_NAME: &str = "pgbouncer";
/// Names inside `<state>/pgbouncer/`; the follow script names them too.
const INI_FILE: &str = "pgbouncer.ini";
const PID_FILE: &str = "pgbouncer.pid";
const BY_PRIMARY_DIR: &str = "by-primary";
const FOLLOW_SCRIPT: &str = "follow-primary.sh";

/// Files of the local PgBouncer.
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(layout: &Layout) -> Paths {
        Paths {
            dir: layout.root.join("pgbouncer"),
        }
    }
    pub fn ini(&self) -> PathBuf {
        self.dir.join(INI_FILE)
    }
    /// The ini routing to `member`, ready for the follow script to put in place.
    pub fn ini_for_primary(&self, member: &str) -> PathBuf {
        self.dir.join(BY_PRIMARY_DIR).join(format!("{member}.ini"))
    }
    pub fn follow_script(&self) -> PathBuf {
        self.dir.join(FOLLOW_SCRIPT)
    }
    pub fn auth_file(&self) -> PathBuf {
        self.dir.join("users.txt")
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }
    /// `unix_socket_dir`: the admin console (`RELOAD`, `SHOW ...`) as user `pgbouncer` from
    /// the same OS user needs no password there.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("pgbouncer.log")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join(PID_FILE)
    }
}

fn lossy(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Where clients reach PgBouncer, when the cluster has it.
pub fn endpoint(cluster: &ValidatedCluster, state: &State) -> Option<Endpoint> {
    cluster.pgbouncer.as_ref().map(|settings| Endpoint {
        host: state.network.pgbouncer_host(),
        port: settings.port,
    })
}

/// PgBouncer's pid when it runs.
pub fn pid(layout: &Layout) -> Option<u32> {
    let paths = Paths::new(layout);
    system::read_pid(&paths.pid_file()).filter(|pid| system::alive(*pid, &lossy(&paths.ini())))
}

/// `pgbouncer.ini` routing every database to `primary_host`.
fn render_ini(
    cluster: &ValidatedCluster,
    state: &State,
    layout: &Layout,
    primary_host: &str,
) -> Option<String> {
    let settings = cluster.pgbouncer.as_ref()?;
    let paths = Paths::new(layout);
    let tls = paths.tls_dir();
    let ca = lossy(&layout.ca_dir().join(TLS_CA_FILE));
    let layout = config::Layout {
        listen: Listen {
            host: state.network.pgbouncer_host(),
            port: settings.port,
            unix_socket_dir: Some(lossy(&paths.socket_dir())),
        },
        files: Files {
            auth_file: lossy(&paths.auth_file()),
            client_tls_cert: lossy(&tls.join(TLS_CERT_FILE)),
            client_tls_key: lossy(&tls.join(TLS_KEY_FILE)),
            client_tls_ca: ca.clone(),
            server_tls_ca: ca,
            // `config.files` are Kubernetes projections; nothing to include locally.
            includes: Vec::new(),
        },
        upstream: Upstream {
            host: primary_host.to_owned(),
            port: cluster.port,
        },
    };
    Some(config::pgbouncer_ini(settings, &layout))
}

/// The `listen_addr`/`listen_port` lines: a change needs a new process, not a RELOAD.
fn listen_lines(ini: &str) -> Vec<&str> {
    ini.lines()
        .filter(|l| l.starts_with("listen_addr ") || l.starts_with("listen_port "))
        .collect()
}

/// Writes PgBouncer's files and makes the process match: started when missing, RELOADed when
/// the ini changed, restarted only when its listen address changed. `auth_password` is
/// `_tusk_pgbouncer`'s clear password (the only one PgBouncer holds). Returns what it did,
/// for `up`'s progress. Stops a running PgBouncer when the spec has none.
pub fn ensure(
    cluster: &ValidatedCluster,
    state: &State,
    layout: &Layout,
    run_as: &RunAs,
    ca: &tusk_pki::RootCa,
    primary_host: &str,
    auth_password: &str,
) -> Result<Option<&'static str>> {
    let Some(ini) = render_ini(cluster, state, layout, primary_host) else {
        return Ok(pid(layout).map(|_| {
            stop(layout);
            "stopped (no longer in the spec)"
        }));
    };
    let paths = Paths::new(layout);
    prune_inis_for_primary(state, &paths);
    for dir in [paths.dir.clone(), paths.socket_dir()] {
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    }
    crate::tls::ensure_server_cert(
        ca,
        &paths.tls_dir(),
        COMMON_NAME,
        &state.network.pgbouncer_host(),
    )?;
    crate::tls::write_secret(&paths.auth_file(), &config::auth_file(auth_password))?;
    let previous = std::fs::read_to_string(paths.ini()).ok();
    let changed = previous.as_deref() != Some(ini.as_str());
    if changed {
        std::fs::write(paths.ini(), &ini).map_err(io("writing", paths.ini()))?;
    }
    run_as.own_tree(&paths.dir)?;
    let outcome = match pid(layout) {
        Some(_) if !changed => None,
        Some(running) if previous.as_deref().map(listen_lines) == Some(listen_lines(&ini)) => {
            system::signal(running, Signal::SIGHUP);
            Some("reloaded")
        }
        Some(_) => {
            stop(layout);
            start(layout, run_as)?;
            Some("restarted (new listen address)")
        }
        None => {
            start(layout, run_as)?;
            Some("started")
        }
    };
    Ok(outcome)
}

/// Points a running PgBouncer at `primary_host` (after a switchover) with a RELOAD. Does
/// nothing without PgBouncer in the spec or a running process.
pub fn follow_primary(
    cluster: &ValidatedCluster,
    state: &State,
    layout: &Layout,
    primary_host: &str,
) -> Result<bool> {
    let (Some(ini), Some(running)) = (
        render_ini(cluster, state, layout, primary_host),
        pid(layout),
    ) else {
        return Ok(false);
    };
    let path = Paths::new(layout).ini();
    if std::fs::read_to_string(&path).ok().as_deref() == Some(ini.as_str()) {
        return Ok(false);
    }
    // The file keeps its owner (the server user) when rewritten in place.
    std::fs::write(&path, ini).map_err(io("writing", &path))?;
    system::signal(running, Signal::SIGHUP);
    Ok(true)
}

/// Prepares PgBouncer to follow `record` when it becomes the leader without `tusk` running,
/// and returns the command line its Patroni runs on every start and role change
/// (`Member::role_change_callback`); `None` without PgBouncer in the spec.
///
/// Writes the follow script and `by-primary/<member>.ini`: the very ini [`ensure`] would
/// write with `record` as primary, so after a failover the next `up` finds nothing to change.
/// Copying a whole rendered file, not editing the live one in place (say with sed), means the
/// script never parses an ini it does not own: a `config.databases` entry or a `*` the user
/// overrides is carried over exactly as `up` renders it. Written before Patroni starts, so
/// its first callback finds the script.
pub fn follow_callback(ctx: &Context, record: &MemberRecord) -> Result<Option<String>> {
    let primary_host = ctx.state.host(record);
    let Some(ini) = render_ini(ctx.cluster, ctx.state, ctx.layout, &primary_host) else {
        return Ok(None);
    };
    let paths = Paths::new(ctx.layout);
    let rendered = paths.ini_for_primary(&record.name);
    let by_primary = paths.dir.join(BY_PRIMARY_DIR);
    std::fs::create_dir_all(&by_primary).map_err(io("creating", &by_primary))?;
    write_if_changed(&rendered, &ini)?;
    write_if_changed(&paths.follow_script(), &follow_script())?;
    // Patroni runs the script as the server user: it must replace files in this directory.
    ctx.run_as.own_tree(&paths.dir)?;
    // Through `sh`, so a state directory on a noexec mount works too.
    let args = [lossy(&paths.follow_script()), record.name.clone()];
    Ok(Some(tusk_config::restore::command_line("/bin/sh", &args)))
}

fn write_if_changed(path: &Path, contents: &str) -> Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(contents) {
        std::fs::write(path, contents).map_err(io("writing", path))?;
    }
    Ok(())
}

/// The Patroni callback (the one place it is rendered). Arguments: the member, then what
/// Patroni appends: action, role, scope. Patroni 3 names the leader `master` (also right
/// after `pg_ctl promote`), Patroni 4 `primary`; a standby cluster's leader is
/// `standby_leader`, which `up` routes PgBouncer to as well. It finds its directory from its
/// own path, so it holds no path that could need quoting.
///
/// The rename is atomic, so PgBouncer never reads half a file, and Patroni killing a
/// callback that a newer one replaces leaves the old ini or the new one. SIGHUP goes to the
/// pid in PgBouncer's pid file only, and only while that process's command line is this
/// `pgbouncer.ini` (a recycled pid belongs to someone else), as [`pid`] checks. It is sent
/// even when the ini was already right: an earlier, killed callback may have renamed without
/// signalling, and a RELOAD of an unchanged file changes nothing.
fn follow_script() -> String {
    format!(
        r#"#!/bin/sh
# Patroni callback (on_start, on_role_change) of a `tusk local` member, generated by Tusk.
# Do not edit. Usage: {FOLLOW_SCRIPT} MEMBER ACTION ROLE SCOPE
set -u
dir=$(dirname "$0")
member=$1
role=$3
case "$role" in
  master|primary|standby_leader) ;;
  *) exit 0 ;;
esac
ini="$dir/{INI_FILE}"
rendered="$dir/{BY_PRIMARY_DIR}/$member.ini"
# Before `up` has set PgBouncer up (or after it left the spec) there is nothing to follow.
[ -f "$ini" ] && [ -f "$rendered" ] || exit 0
if ! cmp -s "$rendered" "$ini"; then
  cp "$rendered" "$ini.$member.tmp" && mv -f "$ini.$member.tmp" "$ini" || exit 1
fi
pid=$(cat "$dir/{PID_FILE}" 2>/dev/null) || exit 0
case "$pid" in ''|*[!0-9]*) exit 0 ;; esac
tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$ini" || exit 0
kill -HUP "$pid"
"#
    )
}

/// Removes the ready-made inis of members no longer in the state (scaled away).
fn prune_inis_for_primary(state: &State, paths: &Paths) {
    let Ok(entries) = std::fs::read_dir(paths.dir.join(BY_PRIMARY_DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let member = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if state.members.iter().all(|m| m.name != member) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn start(layout: &Layout, run_as: &RunAs) -> Result<()> {
    let paths = Paths::new(layout);
    let ini = std::fs::read_to_string(paths.ini()).map_err(io("reading", paths.ini()))?;
    let value = |key: &str| {
        ini.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(" = "))
            .unwrap_or_default()
            .to_owned()
    };
    let address = format!("{}:{}", value("listen_addr"), value("listen_port"));
    system::ensure_port_free("pgbouncer", &address)?;
    let mut command = Command::new(system::find_program("pgbouncer"));
    command.arg(paths.ini()).current_dir(&paths.dir);
    system::spawn_detached(
        "pgbouncer",
        command,
        &paths.log(),
        &paths.pid_file(),
        run_as,
    )?;
    system::wait_listening("pgbouncer", &address, &paths.log(), START_LIMIT, || {
        pid(layout).is_some()
    })
}

/// Stops PgBouncer with SIGTERM, which in PgBouncer 1.18 closes client connections at once
/// (SIGINT's "safe shutdown" would wait for every client to leave).
pub fn stop(layout: &Layout) {
    let paths = Paths::new(layout);
    if let Some(running) = pid(layout) {
        system::terminate(running, &lossy(&paths.ini()), STOP_GRACE);
    }
    let _ = std::fs::remove_file(paths.pid_file());
}

/// `psql` on PgBouncer's admin console (user and database `pgbouncer`, Unix socket) as the OS
/// user PgBouncer runs as, which PgBouncer lets in without a password: `SHOW CONFIG`, `RELOAD`.
pub fn admin_command(
    cluster: &ValidatedCluster,
    layout: &Layout,
    run_as: &RunAs,
    sql: &str,
) -> Option<Command> {
    use std::os::unix::process::CommandExt;
    let settings = cluster.pgbouncer.as_ref()?;
    let psql = Path::new(&tusk_config::paths::bin_dir(cluster.postgres_version)).join("psql");
    let mut command = Command::new(psql);
    system::clear_libpq_env(&mut command);
    command
        .args(["-X", "-A", "-t", "-q", "-h"])
        .arg(Paths::new(layout).socket_dir())
        .args(["-p", &settings.port.to_string()])
        .args(["-U", "pgbouncer", "-d", "pgbouncer", "-c", sql]);
    if run_as.uid != nix::unistd::Uid::effective().as_raw() {
        command.uid(run_as.uid).gid(run_as.gid);
    }
    Some(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the follow script in `dir` as Patroni would call it for member `m1`.
    fn run_script(dir: &Path, role: &str) {
        let script = dir.join(FOLLOW_SCRIPT);
        let status = Command::new("/bin/sh")
            .arg(&script)
            .args(["m1", "on_role_change", role, "reef"])
            .status()
            .expect("sh runs");
        assert!(status.success(), "{role}: {status}");
    }

    #[test]
    fn follow_script_acts_only_for_the_leader_and_signals_only_pgbouncer() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir(dir.join(BY_PRIMARY_DIR)).unwrap();
        std::fs::write(dir.join(FOLLOW_SCRIPT), follow_script()).unwrap();
        let ini = dir.join(INI_FILE);
        std::fs::write(&ini, "host=old\n").unwrap();
        std::fs::write(dir.join(BY_PRIMARY_DIR).join("m1.ini"), "host=m1\n").unwrap();
        // A process that is not PgBouncer sits on the pid file's pid (as after pid reuse);
        // SIGHUP would end it.
        let mut bystander = Command::new("sleep").arg("30").spawn().unwrap();
        std::fs::write(dir.join(PID_FILE), format!("{}\n", bystander.id())).unwrap();

        run_script(dir, "replica");
        assert_eq!(std::fs::read_to_string(&ini).unwrap(), "host=old\n");

        run_script(dir, "master");
        assert_eq!(std::fs::read_to_string(&ini).unwrap(), "host=m1\n");
        std::thread::sleep(Duration::from_millis(200));
        let still_running = bystander.try_wait().unwrap().is_none();
        let _ = bystander.kill();
        let _ = bystander.wait();
        assert!(
            still_running,
            "the script signalled a process that is not PgBouncer"
        );
        assert!(
            !dir.join(format!("{INI_FILE}.m1.tmp")).exists(),
            "temporary file left behind"
        );
    }
}
