//! SQL state of a running local cluster and how clients reach it: `up` reconciles
//! `spec.users` on the primary then runs `spec.databaseInitSQL` once ([`apply_sql_state`]);
//! `tusk local secret` builds the `<c>-pguser-<user>` keys ([`secret`]); `tusk local psql`
//! gets a ready `psql` command ([`psql_command`]). The superuser is reached over the primary's
//! Unix socket (peer authentication: `tusk`'s OS user is in the ident map), users over TLS
//! verified against the local CA with their stored password. Touches the server through
//! `sql`, the password files through `passwords` and the init-SQL marker in the state dir;
//! never logs a password.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use tusk_api::naming::SUPERUSER;
use tusk_api::ValidatedCluster;
use tusk_config::paths::TLS_CA_FILE;

use crate::error::{Error, Result};
use crate::observe::cluster_view;
use crate::passwords;
use crate::patroni_api::PatroniApi;
use crate::secret::{self as secret_keys, Endpoint, UserSecret};
use crate::sql::{self, ConnectTarget, InitSqlOutcome, SqlError, MAINTENANCE_DATABASE};
use crate::state::{self, Layout, State};

/// Field names used in errors, so a failure points at what to fix in the manifest.
const USERS_FIELD: &str = "spec.users";
const INIT_SQL_FIELD: &str = "spec.databaseInitSQL";

/// The superuser on `member`'s Unix socket.
fn superuser_target(cluster: &ValidatedCluster, layout: &Layout, member: &str) -> ConnectTarget {
    ConnectTarget::superuser_socket(layout.member(member).socket_dir(), cluster.port)
}

fn psql_program(cluster: &ValidatedCluster) -> PathBuf {
    Path::new(&tusk_config::paths::bin_dir(cluster.postgres_version)).join("psql")
}

/// The local CA certificate clients verify members against (`sslrootcert`).
pub fn ca_file(layout: &Layout) -> PathBuf {
    layout.ca_dir().join(TLS_CA_FILE)
}

/// Called by `up` once the cluster is ready with `leader` as primary: users and databases
/// first (init SQL usually fills the users' databases), then the init SQL unless a run
/// already succeeded. `manifest_dir` resolves a relative `databaseInitSQL.key`.
pub fn apply_sql_state(
    cluster: &ValidatedCluster,
    layout: &Layout,
    manifest_dir: &Path,
    leader: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let target = superuser_target(cluster, layout, leader);
    let passwords = passwords::ensure_passwords(layout, &cluster.users)?;
    // Statement descriptions name roles and databases, never the verifier they carry.
    let done = sql::reconcile_users_blocking(&target, cluster, &passwords).map_err(|source| {
        Error::Sql {
            field: USERS_FIELD,
            source,
        }
    })?;
    for step in &done {
        progress(&format!("users: {step}"));
    }
    let init_error = |source: SqlError| Error::Sql {
        field: INIT_SQL_FIELD,
        source,
    };
    let Some(init_sql) = &cluster.database_init_sql else {
        // As PGO clears its status: a databaseInitSQL added again later runs again.
        return sql::forget_database_init_sql(&layout.root).map_err(init_error);
    };
    let file = sql::init_sql_path(manifest_dir, init_sql);
    let outcome = sql::run_database_init_sql(&target, &psql_program(cluster), &file, &layout.root)
        .map_err(init_error)?;
    match outcome {
        InitSqlOutcome::Ran { .. } => progress(&format!("ran databaseInitSQL {}", file.display())),
        InitSqlOutcome::AlreadyRan {
            content_changed: true,
            ..
        } => progress(&format!(
            "databaseInitSQL {} changed since it ran; it runs only once (remove \
             spec.databaseInitSQL, run up, then add it back to run it again)",
            file.display()
        )),
        InitSqlOutcome::AlreadyRan { .. } => {}
    }
    Ok(())
}

/// The last manifest `up` applied, and the state it recorded.
fn applied(layout: &Layout) -> Result<(State, ValidatedCluster)> {
    let state = state::require(layout)?;
    let (_, cluster) = crate::up::load_manifest(&layout.manifest())?;
    Ok((state, cluster))
}

/// How long a command looks for the leader: Patroni's REST servers restart their TLS after
/// a certificate reload, and a leader race lasts a loop; neither is "the cluster is down".
const LEADER_LOOKUP: std::time::Duration = std::time::Duration::from_secs(5);

/// The member Patroni reports as leader now (asking again for [`LEADER_LOOKUP`] while none
/// answers with one).
pub(crate) fn current_leader(
    layout: &Layout,
    state: &State,
    cluster: &ValidatedCluster,
) -> Result<String> {
    let api = PatroniApi::new(layout, cluster.patroni.port)?;
    let deadline = std::time::Instant::now() + LEADER_LOOKUP;
    let leader = loop {
        let leader = cluster_view(&api, state).and_then(|v| v.leader().map(|l| l.name.clone()));
        if leader.is_some() || std::time::Instant::now() >= deadline {
            break leader;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    leader.ok_or_else(|| Error::Http {
        what: "finding the primary".into(),
        reason: "no member reports a leader (is the cluster up? see `tusk local status`)".into(),
    })
}

fn find_user<'c>(
    cluster: &'c ValidatedCluster,
    name: &str,
) -> Result<&'c tusk_api::model::UserSpec> {
    cluster
        .users
        .iter()
        .find(|u| u.name.as_str() == name)
        .ok_or_else(|| Error::UnknownUser {
            name: name.into(),
            known: cluster
                .users
                .iter()
                .map(|u| u.name.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Every member's PostgreSQL address, in the recorded order.
fn endpoints(state: &State, cluster: &ValidatedCluster) -> Vec<Endpoint> {
    state
        .members
        .iter()
        .map(|m| Endpoint {
            host: state.host(m),
            port: cluster.port,
        })
        .collect()
}

/// `tusk local secret USER`: the keys of `<c>-pguser-<USER>`. The verifier is the one the
/// server stores (read from the primary), so it matches `pg_authid` exactly.
pub fn secret(layout: &Layout, user: &str) -> Result<UserSecret> {
    let (state, cluster) = applied(layout)?;
    let spec = find_user(&cluster, user)?;
    let password = passwords::password(layout, user)?;
    let leader = current_leader(layout, &state, &cluster)?;
    let target = superuser_target(&cluster, layout, &leader);
    let read_error = |source| Error::Sql {
        field: USERS_FIELD,
        source,
    };
    let verifier = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| read_error(SqlError::Runtime(e)))?
        .block_on(async {
            let client = sql::connect(&target, MAINTENANCE_DATABASE).await?;
            sql::stored_password(&client, user).await
        })
        .map_err(read_error)?
        .ok_or_else(|| Error::StateDir {
            path: layout.root.clone(),
            reason: format!(
                "user {user:?} has no password on the server yet (run `tusk local up`)"
            ),
        })?;
    let secret = secret_keys::user_secret(
        spec,
        &password,
        &verifier,
        &endpoints(&state, &cluster),
        &ca_file(layout),
    );
    Ok(match crate::pgbouncer::endpoint(&cluster, &state) {
        Some(pooler) => secret.with_pgbouncer(&pooler, &ca_file(layout)),
        None => secret,
    })
}

/// `tusk local psql`: the real `psql` aimed at the primary, `extra` appended to its arguments.
/// Without `user`: the superuser over the primary's Unix socket. With `user`: that user over
/// TLS (`verify-full` against the local CA) with its stored password in the environment (not
/// on the command line, where `ps` would show it), naming every member with
/// `target_session_attrs=read-write`, exactly what the Secret's `uri` does.
pub fn psql_command(layout: &Layout, user: Option<&str>, extra: &[OsString]) -> Result<Command> {
    let (state, cluster) = applied(layout)?;
    let mut command = Command::new(psql_program(&cluster));
    crate::system::clear_libpq_env(&mut command);
    command.env("PGPORT", cluster.port.to_string());
    match user {
        None => {
            let leader = current_leader(layout, &state, &cluster)?;
            command
                .env("PGHOST", layout.member(&leader).socket_dir())
                .env("PGUSER", SUPERUSER)
                .env("PGDATABASE", MAINTENANCE_DATABASE);
        }
        Some(name) => {
            let spec = find_user(&cluster, name)?;
            let hosts: Vec<String> = endpoints(&state, &cluster)
                .into_iter()
                .map(|e| e.host)
                .collect();
            command
                .env("PGHOST", hosts.join(","))
                .env("PGUSER", name)
                .env(
                    "PGDATABASE",
                    spec.databases
                        .first()
                        .map(String::as_str)
                        .unwrap_or(MAINTENANCE_DATABASE),
                )
                .env("PGPASSWORD", passwords::password(layout, name)?)
                .env("PGSSLMODE", "verify-full")
                .env("PGSSLROOTCERT", ca_file(layout))
                .env("PGTARGETSESSIONATTRS", "read-write");
        }
    }
    command.args(extra);
    Ok(command)
}
