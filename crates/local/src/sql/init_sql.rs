//! `spec.databaseInitSQL` in local mode. In Kubernetes `{name, key}` is a ConfigMap and its
//! data key; locally there is no ConfigMap, so `key` is the SQL FILE PATH, relative to the
//! manifest's directory (or absolute), and `name` is ignored. The manifest users already have
//! (`key: init.sql`, made with `kubectl create configmap ... --from-file=init.sql=...`) then
//! runs unchanged with `init.sql` beside it.
//!
//! Semantics follow the PGO family: the file runs with the real `psql` as the superuser in
//! the `postgres` database, so meta-commands (`\c zoo`, `\set ON_ERROR_STOP`) work; psql's
//! exit status decides success (without `ON_ERROR_STOP` psql exits 0 after a failed
//! statement, as in PGO). Success is recorded in a marker file holding the SQL's SHA-256;
//! while the marker exists the SQL never runs again, even if the file changes (reported as
//! `AlreadyRan { content_changed: true }`); a failure is reported and not recorded, so the
//! next run retries. Removing `databaseInitSQL` from the spec should call
//! [`forget_database_init_sql`], as PGO clears its status. Touches only the marker file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use tusk_api::model::ConfigMapKey;

use super::{ClientCert, ConnectTarget, Pem, SqlError, MAINTENANCE_DATABASE};

/// The marker's file name inside the state directory.
pub const INIT_SQL_MARKER: &str = "database-init-sql.sha256";

/// What [`run_database_init_sql`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitSqlOutcome {
    /// The SQL ran and succeeded now; `sha256` is recorded.
    Ran { sha256: String },
    /// A previous run succeeded; nothing was executed.
    AlreadyRan {
        recorded_sha256: String,
        content_changed: bool,
    },
}

/// The SQL file for `spec.databaseInitSQL` of a manifest in `manifest_dir`.
pub fn init_sql_path(manifest_dir: &Path, init_sql: &ConfigMapKey) -> PathBuf {
    manifest_dir.join(&init_sql.key)
}

/// Runs `sql_file` with `psql` against `target` unless a success is already recorded in
/// `state_dir`.
pub fn run_database_init_sql(
    target: &ConnectTarget,
    psql: &Path,
    sql_file: &Path,
    state_dir: &Path,
) -> Result<InitSqlOutcome, SqlError> {
    let sql = fs::read(sql_file).map_err(|source| SqlError::ReadFile {
        path: sql_file.to_owned(),
        source,
    })?;
    let sha256 = hex(&Sha256::digest(&sql));
    let marker = state_dir.join(INIT_SQL_MARKER);
    if let Ok(recorded) = fs::read_to_string(&marker) {
        let recorded_sha256 = recorded.trim().to_owned();
        return Ok(InitSqlOutcome::AlreadyRan {
            content_changed: recorded_sha256 != sha256,
            recorded_sha256,
        });
    }
    let output = psql_command(target, psql, sql_file)
        .output()
        .map_err(|source| SqlError::SpawnPsql {
            psql: psql.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(SqlError::InitSqlFailed {
            path: sql_file.to_owned(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    write_marker(&marker, &sha256)?;
    Ok(InitSqlOutcome::Ran { sha256 })
}

/// Drops the record of a successful run, so the (new) init SQL runs once more.
pub fn forget_database_init_sql(state_dir: &Path) -> Result<(), SqlError> {
    let marker = state_dir.join(INIT_SQL_MARKER);
    match fs::remove_file(&marker) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SqlError::WriteMarker {
            path: marker,
            source: e,
        }),
        _ => Ok(()),
    }
}

/// psql with the connection in `PG*` variables (no conninfo quoting to get wrong), no
/// `~/.psqlrc` (`-X`) so the invoking user's settings cannot change the outcome, and stdin
/// closed so a script that waits for input fails instead of hanging.
fn psql_command(target: &ConnectTarget, psql: &Path, sql_file: &Path) -> Command {
    let mut cmd = Command::new(psql);
    cmd.arg("-X")
        .arg("--no-password")
        .arg("-f")
        .arg(sql_file)
        .stdin(std::process::Stdio::null());
    crate::system::clear_libpq_env(&mut cmd);
    cmd.env("PGPORT", target.port.to_string())
        .env("PGUSER", &target.user)
        .env("PGDATABASE", MAINTENANCE_DATABASE)
        .env("PGAPPNAME", "tusk-database-init-sql");
    match &target.socket_dir {
        Some(dir) => {
            cmd.env("PGHOST", dir);
        }
        None => {
            cmd.env("PGHOST", &target.host)
                .env("PGSSLMODE", "verify-full");
            if let Some(address) = target.hostaddr {
                cmd.env("PGHOSTADDR", address.to_string());
            }
            // psql reads certificates from files only; local targets always name files.
            if let Some(Pem::File(ca)) = &target.ca {
                cmd.env("PGSSLROOTCERT", ca);
            }
            if let Some(ClientCert {
                cert: Pem::File(cert),
                key: Pem::File(key),
            }) = &target.client_cert
            {
                cmd.env("PGSSLCERT", cert).env("PGSSLKEY", key);
            }
            if let Some(password) = &target.password {
                cmd.env("PGPASSWORD", password);
            }
        }
    }
    cmd
}

/// Written to a temporary file then renamed, so a crash never leaves a half-written marker
/// that would read as "already ran" with a wrong hash.
fn write_marker(marker: &Path, sha256: &str) -> Result<(), SqlError> {
    let tmp = marker.with_extension("tmp");
    fs::write(&tmp, format!("{sha256}\n"))
        .and_then(|()| fs::rename(&tmp, marker))
        .map_err(|source| SqlError::WriteMarker {
            path: marker.to_owned(),
            source,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
