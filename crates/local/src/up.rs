//! `tusk local up`: makes the state directory and the processes match the manifest. Runs the
//! same validation as the operator, then (in order) certificates and files, etcd, removal of
//! members scaled away, start of missing members (the primary alone first on a new cluster),
//! readiness (a leader and every other member streaming), pgBackRest's stanza, the dynamic
//! configuration and restarts it requires, then `spec.users` and `spec.databaseInitSQL` as SQL
//! on the primary (a standby cluster, `standby`, skips what needs a writable primary and is
//! promoted when `spec.standby` is disabled). `spec.shutdown` stops every member instead
//! (data and etcd kept) and remembers the primary, which starts first and alone when the
//! cluster comes back. An invalid manifest is refused before anything in the state
//! directory changes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tusk_api::plan::{plan_instances, ObservedInstance};
use tusk_api::ValidatedCluster;
use tusk_config::patroni::EtcdApi;

use crate::error::{io, Error, Result};
use crate::members::{self, Context};
use crate::observe::{cluster_view, Waiter};
use crate::patroni_api::PatroniApi;
use crate::state::{self, Layout, MemberRecord, Network, State};
use crate::system::{self, Requirement, RunAs};
use crate::{backup, etcd, rollout, standby, users};

/// File in the state directory naming the primary a `spec.shutdown` stopped last.
const SHUTDOWN_PRIMARY_FILE: &str = "shutdown-primary";

/// The network members use unless `--network` says otherwise.
pub const DEFAULT_NETWORK: &str = "127.0.0";

pub struct UpOptions {
    pub manifest: PathBuf,
    pub state_dir: Option<PathBuf>,
    pub network: Option<String>,
    /// Bound on each wait (primary initialised, replicas streaming, restarts).
    pub wait_limit: Duration,
}

/// Reads and validates a manifest; errors name every offending field.
pub fn load_manifest(path: &Path) -> Result<(String, ValidatedCluster)> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadManifest {
        path: path.into(),
        source,
    })?;
    let cluster = tusk_api::validate_yaml(&text).map_err(|errors| Error::InvalidManifest {
        path: path.into(),
        errors: errors
            .0
            .iter()
            .map(|e| format!("  {e}"))
            .collect::<Vec<_>>()
            .join("\n"),
    })?;
    Ok((text, cluster))
}

/// Programs the manifest needs, with the Debian package of each.
pub fn requirements(cluster: &ValidatedCluster) -> Vec<Requirement> {
    let major = cluster.postgres_version;
    let bin = PathBuf::from(tusk_config::paths::bin_dir(major));
    let pg_package = format!("postgresql-{major}");
    let mut list = vec![
        Requirement {
            path: system::find_program("etcd"),
            package: "etcd-server".into(),
        },
        Requirement {
            path: system::find_program("patroni"),
            package: "patroni".into(),
        },
    ];
    for program in [
        "postgres",
        "initdb",
        "pg_ctl",
        "pg_basebackup",
        "pg_rewind",
        "psql",
    ] {
        list.push(Requirement {
            path: bin.join(program),
            package: pg_package.clone(),
        });
    }
    if cluster.backups.is_some() {
        list.push(Requirement {
            path: system::find_program("pgbackrest"),
            package: "pgbackrest".into(),
        });
    }
    if cluster.pgbouncer.is_some() {
        list.push(Requirement {
            path: system::find_program("pgbouncer"),
            package: "pgbouncer".into(),
        });
    }
    if cluster.exporter.is_some() {
        list.push(Requirement {
            path: system::find_program("prometheus-postgres-exporter"),
            package: "prometheus-postgres-exporter".into(),
        });
    }
    list
}

pub fn up(options: &UpOptions, progress: &mut dyn FnMut(&str)) -> Result<()> {
    let (manifest_text, cluster) = load_manifest(&options.manifest)?;
    backup::check_supported(&cluster)?;
    crate::services::check_supported(&cluster)?;
    let manifest_dir = std::path::absolute(&options.manifest)
        .map_err(io("resolving", &options.manifest))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // Read (and refused when missing) before anything changes.
    let projected = backup::projections::resolve_all(&cluster, &manifest_dir)?;
    let custom_tls = crate::tls::read_custom_tls(&cluster, &options.manifest, progress)?;
    let run_as = RunAs::detect()?;
    system::check_programs(&requirements(&cluster))?;
    let root = match &options.state_dir {
        Some(dir) => dir.clone(),
        None => PathBuf::from(".tusk").join(cluster.name()),
    };
    let layout = Layout::new(root);
    let previous = state::load(&layout)?;
    if previous.is_none() {
        crate::restore::check_clone_source(&cluster, &layout)?;
        crate::standby::check_source(&cluster, &layout)?;
    }
    let network = choose_network(&layout, previous.as_ref(), options.network.as_deref())?;
    if let Some(prev) = &previous {
        if prev.cluster != cluster.name() {
            return Err(Error::StateDir {
                path: layout.root.clone(),
                reason: format!("holds cluster {:?}, not {:?}", prev.cluster, cluster.name()),
            });
        }
    }
    run_as.check_reachable(&layout.root)?;
    std::fs::create_dir_all(&layout.root).map_err(io("creating", &layout.root))?;
    backup::projections::write_all(&layout, &projected)?;
    let mut authority = crate::tls::ensure_ca(&layout, previous.as_ref(), progress)?;
    crate::tls::use_custom_tls(&layout, &mut authority, custom_tls)?;
    let api = PatroniApi::new(&layout, cluster.patroni.port)?;

    // Plan with the names we have, keeping the current primary.
    let recorded = previous
        .as_ref()
        .map(|s| s.members.clone())
        .unwrap_or_default();
    let leader = previous
        .as_ref()
        .and_then(|s| cluster_view(&api, s))
        .and_then(|v| v.leader().map(|l| l.name.clone()));
    let observed: Vec<ObservedInstance> = recorded
        .iter()
        .map(|m| ObservedInstance {
            name: m.name.clone(),
            set: m.set.clone(),
            has_statefulset: true,
            is_primary: leader.as_deref() == Some(m.name.as_str()),
        })
        .collect();
    let plan = plan_instances(&cluster, &observed, &mut rand::rng());
    let patroni = etcd::installed_patroni()?;
    let etcd_api = previous
        .as_ref()
        .map_or(EtcdApi::for_patroni(patroni), |p| p.etcd_api);
    if etcd_api == EtcdApi::V3 && EtcdApi::for_patroni(patroni) == EtcdApi::V2 {
        progress(&format!(
            "warning: this cluster keeps Patroni's keys in etcd's v3 API, where Patroni \
             {}.{}.{} can take the leader key back from a newly promoted member once its own \
             process stalled past the lease, and rewind away what the new primary \
             acknowledged; clusters created from now on use the v2 API",
            patroni.0, patroni.1, patroni.2
        ));
    }
    let mut state = State {
        cluster: cluster.name().into(),
        network,
        members: recorded.clone(),
        etcd_api,
    };
    for (set, name) in plan.instances() {
        if state.members.iter().all(|m| m.name != name) {
            let host_number = state.free_host_number();
            state.members.push(MemberRecord {
                name: name.into(),
                set: set.into(),
                host_number,
            });
        }
    }
    // Removed members stay recorded until they are stopped, so `down` can still find them.
    state::save(&layout, &state)?;
    std::fs::write(layout.manifest(), &manifest_text).map_err(io("writing", layout.manifest()))?;

    progress(&format!(
        "starting etcd on {}",
        etcd::client_endpoint(&state.network)
    ));
    etcd::ensure_running(&layout, &state.network, &run_as)?;
    if cluster.backups.is_some() {
        let dir = layout.pgbackrest_dir();
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        run_as.own_tree(&dir)?;
    }

    for name in &plan.removed {
        progress(&format!("removing member {name}"));
        members::stop(&layout, name);
        etcd::forget_member(
            &state.network,
            state.etcd_api,
            &cluster.names.patroni_scope(),
            name,
        )?;
        // Data of a removed member is deleted: a member added later is cloned fresh from the
        // primary, never started from stale data.
        let dir = layout.member_dir(name);
        std::fs::remove_dir_all(&dir)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(io("removing", &dir))?;
        state.members.retain(|m| &m.name != name);
        state::save(&layout, &state)?;
    }

    let ctx = Context {
        cluster: &cluster,
        layout: &layout,
        state: &state,
        run_as: &run_as,
    };
    members::refresh_tls(&ctx, &authority, progress)?;
    for record in &state.members {
        if members::write_files(&ctx, record)? {
            members::reload(&layout, &record.name);
        }
    }

    if cluster.shutdown {
        return shutdown(&ctx, &api, progress);
    }

    let waiter = Waiter {
        cluster: &cluster,
        layout: &layout,
        state: &state,
        api: &api,
        limit: options.wait_limit,
    };
    let initialised = state.members.iter().any(|m| {
        layout
            .member(&m.name)
            .data_dir()
            .join("PG_VERSION")
            .is_file()
    });
    if !initialised {
        let first = &state.members[0];
        progress(&format!("initializing the primary {}", first.name));
        members::start(&ctx, first)?;
        waiter.leader_running(&first.name)?;
    } else if let Some(primary) = shutdown_primary(&layout, &state) {
        // After spec.shutdown the replicas stopped first, so only the old primary has every
        // transaction: it must lead again, not whichever member's Patroni happens to start
        // first and wins the leader race.
        if members::start(&ctx, primary)? {
            progress(&format!(
                "starting the previous primary {} first",
                primary.name
            ));
        }
        waiter.leader_running(&primary.name)?;
    }
    for record in &state.members {
        if members::start(&ctx, record)? {
            progress(&format!(
                "starting {} on {}",
                record.name,
                state.host(record)
            ));
        }
    }
    progress("waiting for every replica to stream");
    let leader = waiter.ready_healing(&ctx, progress)?;

    let was_following = standby::following(&waiter);
    if standby::may_own_stanza(&cluster, &waiter) {
        progress("creating the pgBackRest stanza and checking WAL archiving");
        backup::stanza_create_and_check(&layout, &leader, &run_as)?;
    }
    let patch = rollout::apply_dynamic_configuration(&waiter, &leader)?;
    if patch.is_some() {
        progress("applied the dynamic configuration change");
    }
    standby::finish_promotion(&waiter, was_following, &leader, &run_as, progress)?;
    rollout::restart_pending(&waiter, patch.as_ref(), &leader, progress)?;
    let leader = waiter.ready(&mut |_| {})?;
    let _ = std::fs::remove_file(layout.root.join(SHUTDOWN_PRIMARY_FILE));

    if standby::enabled(&cluster) {
        // Read-only while following: roles and databases arrive from the source.
        progress("standby cluster: users, databases and service roles come from the source");
    } else {
        users::apply_sql_state(&cluster, &layout, &manifest_dir, &leader, progress)?;
        crate::services::ensure(&ctx, &authority.ca, &leader, progress)?;
    }
    progress(&format!(
        "cluster {} is ready: primary {leader}, {} member(s)",
        cluster.name(),
        state.members.len()
    ));
    Ok(())
}

/// The network is fixed when the cluster is created: addresses are in certificates and the DCS.
fn choose_network(
    layout: &Layout,
    previous: Option<&State>,
    asked: Option<&str>,
) -> Result<Network> {
    match (previous, asked) {
        (Some(prev), Some(asked)) if prev.network.as_str() != asked => Err(Error::StateDir {
            path: layout.root.clone(),
            reason: format!(
                "the cluster runs on network {}; --network {asked} cannot move it",
                prev.network.as_str()
            ),
        }),
        (Some(prev), _) => Ok(prev.network.clone()),
        (None, asked) => Network::parse(asked.unwrap_or(DEFAULT_NETWORK)),
    }
}

/// The member recorded by the last `spec.shutdown` as primary, if it is still a member.
fn shutdown_primary<'s>(layout: &Layout, state: &'s State) -> Option<&'s MemberRecord> {
    let name = std::fs::read_to_string(layout.root.join(SHUTDOWN_PRIMARY_FILE)).ok()?;
    state.members.iter().find(|m| m.name == name.trim())
}

/// `spec.shutdown: true`: stops the members, replicas first so the primary is not failed
/// over; data is kept. etcd keeps running (the DCS remembers the cluster). The primary is
/// recorded (when one runs; a repeated shutdown keeps the first record) for the next start.
fn shutdown(ctx: &Context, api: &PatroniApi, progress: &mut dyn FnMut(&str)) -> Result<()> {
    crate::services::stop(ctx.layout);
    let leader = cluster_view(api, ctx.state).and_then(|v| v.leader().map(|l| l.name.clone()));
    if let Some(leader) = &leader {
        let file = ctx.layout.root.join(SHUTDOWN_PRIMARY_FILE);
        std::fs::write(&file, format!("{leader}\n")).map_err(io("writing", &file))?;
    }
    let mut order: Vec<&MemberRecord> = ctx.state.members.iter().collect();
    order.sort_by_key(|m| leader.as_deref() == Some(m.name.as_str()));
    for record in order {
        if members::pids(&ctx.layout.member(&record.name))
            .patroni
            .is_some()
        {
            progress(&format!("stopping {} (spec.shutdown)", record.name));
        }
        members::stop(ctx.layout, &record.name);
    }
    Ok(())
}
