//! One Patroni + PostgreSQL member: its files (patroni.yaml from the shared renderer,
//! certificates, pgbackrest.conf), starting Patroni detached, stopping it, reloading it
//! (configuration and certificates), and finding its processes. Touches the member's
//! directory and its processes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tusk_api::ValidatedCluster;
use tusk_config::patroni::{member_yaml_bootstrapped, Dcs, Member};
use tusk_config::pgbackrest::{posix_conf, PosixInstance};

use crate::error::{io, Result};
use crate::state::{Layout, MemberPaths, MemberRecord, State};
use crate::system::{self, RunAs};

/// How long Patroni gets to stop PostgreSQL (a fast shutdown) before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// Everything needed to render and run members.
pub struct Context<'a> {
    pub cluster: &'a ValidatedCluster,
    pub layout: &'a Layout,
    pub state: &'a State,
    pub run_as: &'a RunAs,
}

/// Processes of a member, when running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pids {
    pub patroni: Option<u32>,
    pub postgres: Option<u32>,
}

fn lossy(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Brings every member's certificate files up to date ([`crate::tls`] decides what is due)
/// and makes running members re-read them with a reload, never a restart. Two passes, so no
/// server is shown a certificate it does not trust yet: first the trust bundle everywhere,
/// then the leaves. A valid leaf of a previous root moves to the signing root only when every
/// member's CA files held that root before this call (see the rollover steps in `tls`).
pub fn refresh_tls(
    ctx: &Context,
    authority: &crate::tls::Authority,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let members: Vec<(&MemberRecord, MemberPaths)> = ctx
        .state
        .members
        .iter()
        .map(|record| (record, ctx.layout.member(&record.name)))
        .collect();
    let mut everyone_trusts_signing_root = true;
    for (_, paths) in &members {
        everyone_trusts_signing_root &= crate::tls::trusts_signing_root(paths, authority)?;
    }
    for (record, paths) in &members {
        if crate::tls::write_member_trust(paths, authority)? {
            ctx.run_as.own_tree(&paths.dir)?;
            reload_tls(ctx, &record.name, progress);
        }
    }
    for (record, paths) in &members {
        let host = ctx.state.host(record);
        let member = crate::tls::MemberTls {
            paths,
            member: &record.name,
            host: &host,
        };
        if crate::tls::ensure_member_certs(authority, &member, everyone_trusts_signing_root)? {
            ctx.run_as.own_tree(&paths.dir)?;
            if reload_tls(ctx, &record.name, progress) {
                progress(&format!(
                    "{}: new certificates loaded by a reload",
                    record.name
                ));
            }
        }
    }
    Ok(())
}

/// Makes a running member re-read its certificate files: `pg_reload_conf()` so PostgreSQL
/// uses them for the next connection as soon as this returns (sessions already open keep
/// theirs), and SIGHUP to Patroni, which re-initialises its REST server when its certificate's
/// serial changed. Returns whether the member was running. A failing `pg_reload_conf()` (a
/// server still starting) is reported, not fatal: Patroni's SIGHUP reloads PostgreSQL too.
fn reload_tls(ctx: &Context, name: &str, progress: &mut dyn FnMut(&str)) -> bool {
    let running = pids(&ctx.layout.member(name));
    if running.postgres.is_some() {
        if let Err(e) = psql(ctx.cluster, ctx.layout, name, "SELECT pg_reload_conf()") {
            progress(&format!(
                "{name}: pg_reload_conf() failed ({e}); Patroni reloads PostgreSQL instead"
            ));
        }
    }
    reload(ctx.layout, name);
    running.patroni.is_some() || running.postgres.is_some()
}

/// Writes the member's directory: patroni.yaml and pgbackrest.conf (rewritten each time from
/// the current manifest; certificates are [`refresh_tls`]'s). Returns whether patroni.yaml
/// changed, so a running member can be told to reload.
pub fn write_files(ctx: &Context, record: &MemberRecord) -> Result<bool> {
    let paths = ctx.layout.member(&record.name);
    let host = ctx.state.host(record);
    for dir in [
        paths.dir.clone(),
        paths.socket_dir(),
        paths.dir.join("log"),
        paths.dir.join("lock"),
    ] {
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    }
    let member = Member {
        name: record.name.clone(),
        host: host.clone(),
        data_dir: lossy(&paths.data_dir()),
        wal_dir: None,
        bin_dir: Some(tusk_config::paths::bin_dir(ctx.cluster.postgres_version)),
        socket_dir: lossy(&paths.socket_dir()),
        server_tls_dir: lossy(&paths.server_tls_dir()),
        rest_api_ca_file: crate::tls::rest_api_trust(&paths)?.as_deref().map(lossy),
        replication_tls_dir: lossy(&paths.replication_tls_dir()),
        os_user: ctx.run_as.invoking_user.clone(),
        role_change_callback: crate::pgbouncer::follow_callback(ctx, record)?,
    };
    let dcs = Dcs::Etcd {
        hosts: vec![crate::etcd::client_endpoint(&ctx.state.network)],
        api: ctx.state.etcd_api,
    };
    let bootstrap = crate::restore::bootstrap(ctx.cluster, ctx.layout, &paths.data_dir())?;
    let yaml = member_yaml_bootstrapped(ctx.cluster, &dcs, &member, &bootstrap);
    let changed = std::fs::read_to_string(paths.config()).ok().as_deref() != Some(&yaml);
    if changed {
        std::fs::write(paths.config(), &yaml).map_err(io("writing", paths.config()))?;
    }
    if ctx.cluster.backups.is_some() {
        let conf = posix_conf(
            ctx.cluster,
            &PosixInstance {
                data_dir: &member.data_dir,
                socket_dir: &member.socket_dir,
                port: ctx.cluster.port,
                repo_root: &lossy(&ctx.layout.pgbackrest_dir()),
                log_dir: &lossy(&paths.dir.join("log")),
                lock_dir: &lossy(&paths.dir.join("lock")),
            },
        )
        .map_err(crate::backup::not_local)?;
        let projected =
            crate::backup::projections::stored(ctx.layout, crate::backup::Projected::Backups)?;
        // 0600: the projections may hold object-store credentials.
        crate::tls::write_secret(&paths.pgbackrest_conf(), &(conf + &projected))?;
    }
    crate::fencer::write_config(ctx, record)?;
    ctx.run_as.own_tree(&paths.dir)?;
    Ok(changed)
}

/// The member's processes that are alive now.
pub fn pids(paths: &MemberPaths) -> Pids {
    let patroni = system::read_pid(&paths.pid_file())
        .filter(|pid| system::alive(*pid, &lossy(&paths.config())));
    let postgres = system::read_pid(&paths.data_dir().join("postmaster.pid"))
        .filter(|pid| system::alive(*pid, &lossy(&paths.data_dir())));
    Pids { patroni, postgres }
}

/// Starts Patroni for the member unless it runs already. Returns whether it was started.
pub fn start(ctx: &Context, record: &MemberRecord) -> Result<bool> {
    let paths = ctx.layout.member(&record.name);
    // The fencer first: a member's PostgreSQL never runs as a primary unguarded.
    crate::fencer::start(ctx, record)?;
    if pids(&paths).patroni.is_some() {
        return Ok(false);
    }
    let mut command = Command::new(system::find_program("patroni"));
    command
        .arg(paths.config())
        .current_dir(&paths.dir)
        .env("HOME", &paths.dir)
        .env("LC_ALL", "C.UTF-8")
        // archive_command, restore_command and the pgbackrest replica method run under
        // PostgreSQL/Patroni and find this member's configuration here.
        .env("PGBACKREST_CONFIG", paths.pgbackrest_conf());
    system::spawn_detached(
        &format!("patroni for {}", record.name),
        command,
        &paths.log(),
        &paths.pid_file(),
        ctx.run_as,
    )?;
    Ok(true)
}

/// Stops the member: SIGTERM to Patroni (which stops PostgreSQL with a fast shutdown and
/// releases leadership), SIGKILL after a grace period, then any PostgreSQL left behind, then
/// its fencer.
pub fn stop(layout: &Layout, name: &str) {
    let paths = layout.member(name);
    let running = pids(&paths);
    if let Some(pid) = running.patroni {
        system::terminate(pid, &lossy(&paths.config()), STOP_GRACE);
    }
    // A Patroni killed hard leaves its postmaster running; never leave it behind.
    if let Some(pid) = pids(&paths).postgres {
        system::terminate(pid, &lossy(&paths.data_dir()), STOP_GRACE);
    }
    let _ = std::fs::remove_file(paths.pid_file());
    crate::fencer::stop(&paths);
}

/// Asks a running Patroni to re-read patroni.yaml (SIGHUP = `patronictl reload`).
pub fn reload(layout: &Layout, name: &str) {
    if let Some(pid) = pids(&layout.member(name)).patroni {
        system::signal(pid, nix::sys::signal::Signal::SIGHUP);
    }
}

/// Runs SQL on a member over its Unix socket as the superuser (peer authentication through
/// the pg_ident map), returning unaligned tuples-only output.
pub fn psql(cluster: &ValidatedCluster, layout: &Layout, name: &str, sql: &str) -> Result<String> {
    let paths = layout.member(name);
    let bin = Path::new(&tusk_config::paths::bin_dir(cluster.postgres_version)).join("psql");
    let mut command = Command::new(bin);
    command
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(paths.socket_dir())
        .args(["-p", &cluster.port.to_string()])
        .args([
            "-U",
            tusk_api::naming::SUPERUSER,
            "-d",
            "postgres",
            "-c",
            sql,
        ]);
    system::run_helper(&format!("psql on {name}"), command, None)
}
