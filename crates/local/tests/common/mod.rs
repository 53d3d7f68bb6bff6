//! Shared harness for the `local_*` tests of `tusk local` (users, shutdown, ...): a
//! cluster in a temp state directory on its own loopback network that records `up`'s
//! progress lines and runs `down` on drop, a small manifest builder, and psql helpers.
//! The HA tests and the failover benchmark use `common/ha.rs` instead (included by path).
//! Touches only the temp dir it creates and the processes recorded in it.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use tusk_local::{Layout, UpOptions};

pub const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";

/// A manifest named `name` with one instance set of `replicas` members and short Patroni
/// timings (the tests are not about them); `extra` is appended under `spec:` (indent 2).
pub fn manifest(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        "apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata:
  name: {name}
spec:
  postgresVersion: 15
  instances:
    - name: instance1
      replicas: {replicas}
      dataVolumeClaimSpec:
        accessModes: [\"ReadWriteOnce\"]
        resources: {{ requests: {{ storage: 1Gi }} }}
  patroni:
    leaderLeaseDurationSeconds: 10
    syncPeriodSeconds: 2
{extra}"
    )
}

/// Runs `command`; trimmed stdout on success, stderr (and stdout) otherwise.
pub fn output(mut command: Command) -> Result<String, String> {
    let out = command.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// Runs SQL through real libpq with a connection string or URI.
pub fn psql(conninfo: &str, sql: &str) -> Result<String, String> {
    let mut command = Command::new(PSQL);
    command.args([
        "-X",
        "-A",
        "-t",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        conninfo,
        "-c",
        sql,
    ]);
    // Only `conninfo` counts: the caller's libpq environment must not supply a password,
    // host or sslmode the test did not choose.
    command
        .env_remove("PGPASSWORD")
        .env_remove("PGHOST")
        .env_remove("PGSSLMODE");
    output(command)
}

/// A state directory under a temp dir the `postgres` OS user can enter; `down` on drop.
pub struct Cluster {
    /// `None` for a cluster made [`Cluster::beside`] another, whose temp dir holds both.
    _tmp: Option<tempfile::TempDir>,
    pub state_dir: PathBuf,
    pub network: String,
    /// Every progress line `up` printed, to check none leaks a secret.
    pub progress: Mutex<Vec<String>>,
}

impl Cluster {
    pub fn new(network: &str) -> Cluster {
        Cluster::named(network, "state")
    }

    /// A cluster whose state dir is `<temp>/<dir>`: `tusk local` finds a clone's source
    /// cluster by name beside its own state dir.
    pub fn named(network: &str, dir: &str) -> Cluster {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let state_dir = tmp.path().join(dir);
        Cluster {
            _tmp: Some(tmp),
            state_dir,
            network: network.into(),
            progress: Mutex::new(Vec::new()),
        }
    }

    /// Another cluster in this one's temp dir (declare it after `self`, so it is dropped,
    /// and stopped, before the temp dir goes).
    pub fn beside(&self, network: &str, dir: &str) -> Cluster {
        Cluster {
            _tmp: None,
            state_dir: self.state_dir.parent().unwrap().join(dir),
            network: network.into(),
            progress: Mutex::new(Vec::new()),
        }
    }

    pub fn layout(&self) -> Layout {
        Layout::new(&self.state_dir)
    }

    /// Writes `text` to `name` next to the state dir (where manifests and the files they
    /// name live) and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.state_dir.parent().unwrap().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn up(&self, manifest: &Path) -> tusk_local::Result<()> {
        let options = UpOptions {
            manifest: manifest.into(),
            state_dir: Some(self.state_dir.clone()),
            network: Some(self.network.clone()),
            wait_limit: Duration::from_secs(180),
        };
        tusk_local::up(&options, &mut |line| {
            eprintln!("[{}] {line}", self.network);
            self.progress.lock().unwrap().push(line.to_owned());
        })
    }

    /// Superuser SQL in database `db` on the primary through `tusk local psql` (Unix socket,
    /// peer auth); trimmed output, or psql's error.
    pub fn sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let args: Vec<std::ffi::OsString> = [
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ]
        .into_iter()
        .map(Into::into)
        .collect();
        output(tusk_local::psql_command(&self.layout(), None, &args).map_err(|e| e.to_string())?)
    }

    /// The running leader's name and address.
    pub fn leader(&self) -> (String, String) {
        let report = tusk_local::status(&self.layout()).unwrap();
        let leader = report
            .members
            .iter()
            .find(|m| m.role == "leader")
            .unwrap_or_else(|| panic!("no leader in {report:#?}"));
        (leader.name.clone(), leader.host.clone())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.state_dir.join("state.json").is_file() {
            let _ = tusk_local::down(&self.layout(), false, &mut |_| {});
        }
    }
}
