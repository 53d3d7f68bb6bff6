//! The instance pod's readiness probe: ready means the primary, or a replica that streams
//! (Patroni 3.0's `/readiness` also passes a replica that only runs). The probe's query is
//! evaluated here by a real PostgreSQL 15 in the states that matter: a primary, and a
//! standby that does not stream (in recovery, its `primary_conninfo` naming a member of the
//! cluster, or naming nothing as a repo-only standby leader's does).

#[path = "fixtures/support.rs"]
mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use nix::unistd::{chown, User};
use tusk_operator::build::instance::readiness_sql;

use support::*;

const BIN: &str = "/usr/lib/postgresql/15/bin";

const CLUSTER: &str = r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {name: hippo, namespace: tusk}
spec:
  postgresVersion: 15
  instances:
    - dataVolumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#;

fn standby_cluster() -> tusk_api::ValidatedCluster {
    validate(&format!(
        "{CLUSTER}  standby: {{enabled: true, host: primary.example}}\n"
    ))
}

#[test]
fn the_probe_runs_the_query_as_the_superuser_over_the_socket() {
    let cluster = validate(CLUSTER);
    let objects = build_placeholders(&cluster);
    for sts in statefulsets(&objects) {
        let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let db = &pod.containers[0];
        let probe = db.readiness_probe.as_ref().unwrap();
        assert!(probe.http_get.is_none(), "not Patroni's /readiness");
        let command = probe.exec.as_ref().unwrap().command.as_ref().unwrap();
        assert_eq!(command[..2], ["sh", "-c"]);
        assert!(
            command[2].contains("psql -XAtq -h /tmp/postgres -U postgres -d postgres"),
            "{command:?}"
        );
        assert!(command[2].ends_with("= t"), "fails unless the answer is t");
        assert_eq!(command[4], readiness_sql(&cluster));
        // Liveness stays Patroni's: a slow recovery must not get the pod killed.
        let liveness = db
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(liveness.path.as_deref(), Some("/liveness"));
    }
}

struct Server {
    dir: tempfile::TempDir,
    user: User,
}

impl Server {
    fn init() -> Server {
        let user = User::from_name("postgres")
            .expect("passwd lookup")
            .expect("the postgres OS user (Debian postgresql-15) exists");
        let dir = tempfile::tempdir().expect("a temporary directory");
        chown(dir.path(), Some(user.uid), Some(user.gid)).expect("chown");
        let server = Server { dir, user };
        let out = server.run(
            "initdb",
            &["-D", &server.data(), "-U", "postgres", "--auth=trust"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        server
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new(Path::new(BIN).join(program))
            .args(args)
            .uid(self.user.uid.as_raw())
            .gid(self.user.gid.as_raw())
            .env("HOME", &self.user.dir)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"))
    }

    fn start(&self) {
        let socket = self.dir.path().display().to_string();
        let options = format!("-c listen_addresses='' -c unix_socket_directories={socket}");
        let log = self.dir.path().join("log").display().to_string();
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn query(&self, sql: &str) -> String {
        let socket = self.dir.path().display().to_string();
        let out = self.run(
            "psql",
            &[
                "-XAtq", "-h", &socket, "-U", "postgres", "-d", "postgres", "-c", sql,
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Restarts as a standby following `conninfo` (a host that does not answer).
    fn become_standby(&self, conninfo: &str) {
        self.stop();
        let data = Path::new(&self.data()).to_owned();
        std::fs::write(data.join("standby.signal"), "").unwrap();
        std::fs::write(
            data.join("postgresql.auto.conf"),
            format!("primary_conninfo = '{conninfo}'\n"),
        )
        .unwrap();
        chown(&data.join("standby.signal"), Some(self.user.uid), None).unwrap();
        self.start();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_primary_is_ready_and_a_standby_that_does_not_stream_is_not() {
    if !Path::new(BIN).join("postgres").exists() {
        panic!("PostgreSQL 15 is not installed ({BIN}): scripts/setup-local installs it");
    }
    let cluster = validate(CLUSTER);
    let standby = standby_cluster();
    let server = Server::init();
    server.start();
    assert_eq!(server.query(&readiness_sql(&cluster)), "t", "a primary");
    assert_eq!(server.query(&readiness_sql(&standby)), "t");

    // A member following another member of the cluster (its pod's DNS name), which does not
    // answer: running, in recovery, not streaming.
    server.become_standby(
        "host=hippo-a-xxxx-0.hippo-pods.tusk.svc port=5432 user=_tusk_repl connect_timeout=1",
    );
    assert_eq!(server.query("select pg_is_in_recovery()"), "t");
    assert_eq!(
        server.query(&readiness_sql(&cluster)),
        "f",
        "a replica that does not stream"
    );
    assert_eq!(
        server.query(&readiness_sql(&standby)),
        "f",
        "a standby cluster's replica that does not stream from its leader"
    );

    // A standby cluster's leader: following a host outside the cluster, or only a repo.
    server.become_standby("host=primary.example port=5432 connect_timeout=1");
    assert_eq!(server.query(&readiness_sql(&standby)), "t");
    assert_eq!(
        server.query(&readiness_sql(&cluster)),
        "f",
        "outside a standby cluster every standby must stream"
    );
    server.become_standby("");
    assert_eq!(server.query(&readiness_sql(&standby)), "t");
}
