//! Harness for the `local_users` and `local_shutdown` tests against the real programs
//! (etcd-server, patroni, postgresql-15 from Debian): a cluster in its own temp state
//! directory on its own loopback network, stopped (`down`) on drop even when the test panics,
//! small manifests, and a real `psql` client. (The HA tests have their own, in `common/`.)

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use tusk_local::{Layout, UpOptions};

pub const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";

/// A manifest for cluster `name` with one instance set of `replicas` members, no backups
/// (faster, nothing to archive; the volume claim is required by the API, unused locally), and `extra` appended under `spec:` (two-space indented).
pub fn manifest(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        "apiVersion: tusk.rs/v1beta1\nkind: PostgresCluster\nmetadata:\n  name: {name}\n\
         spec:\n  postgresVersion: 15\n  instances:\n    - name: set1\n      replicas: {replicas}\n\
         \x20     dataVolumeClaimSpec:\n\
         \x20       accessModes: [ReadWriteOnce]\n\
         \x20       resources: {{requests: {{storage: 1Gi}}}}\n\
         {extra}"
    )
}

/// A state directory under a temp dir the `postgres` OS user can enter; `down` on drop.
pub struct Cluster {
    pub tmp: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub network: &'static str,
    /// Every progress line `up` printed, to check that no secret reached them.
    pub progress: Mutex<Vec<String>>,
}

impl Cluster {
    pub fn new(network: &'static str) -> Cluster {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let state_dir = tmp.path().join("state");
        Cluster {
            tmp,
            state_dir,
            network,
            progress: Mutex::new(Vec::new()),
        }
    }

    pub fn layout(&self) -> Layout {
        Layout::new(&self.state_dir)
    }

    /// Writes `text` as `file` in the temp dir (beside the manifests) and returns its path.
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.tmp.path().join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn up(&self, manifest: &Path) -> tusk_local::Result<()> {
        let options = UpOptions {
            manifest: manifest.into(),
            state_dir: Some(self.state_dir.clone()),
            network: Some(self.network.into()),
            wait_limit: Duration::from_secs(180),
        };
        tusk_local::up(&options, &mut |line| {
            eprintln!("[{}] {line}", self.network);
            self.progress.lock().unwrap().push(line.to_owned());
        })
    }

    /// The member Patroni reports as leader, with its address.
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

/// Runs `sql` with the real psql against `conninfo` (a URI or key=value string), tuples only.
/// `PGPASSWORD` etc. from the test's environment are cleared so only `conninfo` counts.
pub fn psql(conninfo: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(PSQL)
        .args([
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
        ])
        .env_remove("PGPASSWORD")
        .env_remove("PGHOST")
        .env_remove("PGSSLMODE")
        .output()
        .expect("psql runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Runs a prepared command (e.g. `tusk_local::psql_command`) and returns its trimmed stdout.
pub fn output(mut command: Command) -> Result<String, String> {
    let out = command.output().expect("command runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
