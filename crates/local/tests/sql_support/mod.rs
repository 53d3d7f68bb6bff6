//! A real PostgreSQL 15 for the `sql_*` tests: initdb + postgres from the Debian package, run
//! as the `postgres` OS user (PostgreSQL refuses root) in a temporary directory it owns,
//! listening on its own 127.77.x.y address with TLS from a throwaway Tusk CA. pg_hba is the
//! one Tusk's model needs: the superuser by peer over the socket (root mapped to it), everyone
//! else by SCRAM over TCP. Killed and removed on drop.

#![allow(dead_code)] // each test binary uses a different part

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use nix::unistd::{chown, User};
use tusk_local::sql::ConnectTarget;

pub const BIN: &str = "/usr/lib/postgresql/15/bin";
const PORT: u16 = 55432;

static NEXT_HOST: AtomicU8 = AtomicU8::new(1);

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub host: String,
    pub port: u16,
    pub ca_file: PathBuf,
    child: Child,
}

fn postgres_user() -> User {
    User::from_name("postgres")
        .expect("passwd lookup")
        .expect("the postgres OS user (Debian postgresql-15) exists")
}

fn as_postgres(program: &str) -> Command {
    let user = postgres_user();
    let mut cmd = Command::new(Path::new(BIN).join(program));
    cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    cmd.env("HOME", &user.dir);
    cmd
}

impl TestServer {
    pub fn start() -> TestServer {
        let user = postgres_user();
        let dir = tempfile::Builder::new()
            .prefix("tusk-sql-test")
            .tempdir()
            .unwrap();
        chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
        let data = dir.path().join("data");
        let status = as_postgres("initdb")
            .args([
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--auth-local=peer",
                "--auth-host=reject",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");

        // Distinct address per server: tests in one binary run in parallel, and the PID keeps
        // concurrent test binaries apart.
        let host = format!(
            "127.77.{}.{}",
            std::process::id() % 250 + 1,
            NEXT_HOST.fetch_add(1, Ordering::SeqCst)
        );
        let now = time::OffsetDateTime::now_utc();
        let ca = tusk_pki::RootCa::generate(now).unwrap();
        let leaf = ca
            .issue_server(&host, std::slice::from_ref(&host), now)
            .unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            chown(&path, Some(user.uid), Some(user.gid)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let ca_file = write("ca.crt", ca.cert_pem(), 0o644);
        write("tls.crt", &leaf.cert_pem, 0o644);
        write("tls.key", &leaf.key_pem, 0o600);
        write(
            "pg_hba.conf",
            "local all postgres peer map=tusk\nhost all all 127.0.0.0/8 scram-sha-256\n",
            0o644,
        );
        write(
            "pg_ident.conf",
            "tusk root postgres\ntusk postgres postgres\n",
            0o644,
        );
        let socket = dir.path().join("sock");
        std::fs::create_dir(&socket).unwrap();
        chown(&socket, Some(user.uid), Some(user.gid)).unwrap();

        let d = dir.path().display();
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-c", &format!("listen_addresses={host}")])
            .args(["-c", &format!("port={PORT}")])
            .args([
                "-c",
                &format!("unix_socket_directories={}", socket.display()),
            ])
            .args(["-c", &format!("hba_file={d}/pg_hba.conf")])
            .args(["-c", &format!("ident_file={d}/pg_ident.conf")])
            .args(["-c", "ssl=on"])
            .args(["-c", &format!("ssl_cert_file={d}/tls.crt")])
            .args(["-c", &format!("ssl_key_file={d}/tls.key")])
            .args(["-c", "password_encryption=scram-sha-256"])
            .args(["-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("postgres.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let server = TestServer {
            dir,
            host,
            port: PORT,
            ca_file,
            child,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        for _ in 0..300 {
            let ok = Command::new(Path::new(BIN).join("pg_isready"))
                .args(["-q", "-h"])
                .arg(self.socket_dir())
                .args(["-p", &self.port.to_string()])
                .status()
                .unwrap()
                .success();
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("postgres did not start:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The superuser over the Unix socket (peer, root mapped to postgres).
    pub fn superuser(&self) -> ConnectTarget {
        ConnectTarget::superuser_socket(self.socket_dir(), self.port)
    }

    /// `user` over TCP with TLS verified against the test CA.
    pub fn tcp_user(&self, user: &str, password: &str) -> ConnectTarget {
        ConnectTarget {
            host: self.host.clone(),
            hostaddr: None,
            port: self.port,
            socket_dir: None,
            user: user.to_owned(),
            ca: Some(tusk_local::sql::Pem::File(self.ca_file.clone())),
            client_cert: None,
            password: Some(password.to_owned()),
        }
    }

    /// `psql -tA -c sql` as the superuser over the socket: the real client's view.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(Path::new(BIN).join("psql"))
            .args(["-X", "-tA", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // SIGTERM = smart shutdown would wait for clients; SIGQUIT stops at once. The
        // postmaster runs as another user, so signal it through its pid, then reap it.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A manifest with `users_yaml` (indented under `spec:`), validated.
pub fn cluster(users_yaml: &str) -> tusk_api::ValidatedCluster {
    let yaml = format!(
        "apiVersion: tusk.rs/v1beta1\nkind: PostgresCluster\nmetadata: {{name: hippo}}\n\
         spec:\n  postgresVersion: 15\n  instances:\n    - name: one\n      \
         dataVolumeClaimSpec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n\
         {users_yaml}"
    );
    tusk_api::validate_yaml(&yaml).unwrap_or_else(|e| panic!("invalid test manifest: {e:?}"))
}
