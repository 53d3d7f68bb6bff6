//! A real PostgreSQL 15 (Debian package) configured the way the operator renders a cluster:
//! pg_hba and pg_ident from the Patroni ConfigMap, certificates from the cert Secret, the
//! DCS parameters that matter for authentication. It runs as the `postgres` OS user
//! (PostgreSQL refuses root) in its own temporary directory, on its own 127.78.x.y address,
//! and is killed and removed on drop (also when the test panics).
//!
//! One addition to the rendered pg_ident: the test's own OS user is mapped to `postgres` in
//! the peer map (as `tusk local` does for its user), so the test can inspect the server as the
//! superuser over the Unix socket. TCP is exactly the rendered policy.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use nix::unistd::{chown, User};

pub const BIN: &str = "/usr/lib/postgresql/15/bin";
pub const PORT: u16 = 55433;

static NEXT_HOST: AtomicU8 = AtomicU8::new(1);

/// What the server is configured with (rendered by the operator).
pub struct ServerFiles {
    pub pg_hba: Vec<String>,
    pub pg_ident: Vec<String>,
    /// DCS parameters (`ssl`, `ssl_min_protocol_version`, `password_encryption`, ...).
    pub parameters: Vec<(String, String)>,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

pub struct PgServer {
    pub dir: tempfile::TempDir,
    pub host: String,
    pub port: u16,
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

impl PgServer {
    pub fn start(files: &ServerFiles) -> PgServer {
        let user = postgres_user();
        let dir = tempfile::Builder::new()
            .prefix("tusk-operator-sql-test")
            .tempdir()
            .unwrap();
        chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
        let data = dir.path().join("data");
        let status = as_postgres("initdb")
            .args(["-U", "postgres", "-E", "UTF8", "--no-sync"])
            .args(["--auth-local=peer", "--auth-host=reject", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        // Distinct per server and per test binary (the PID), so parallel tests never meet.
        let host = format!(
            "127.78.{}.{}",
            std::process::id() % 250 + 1,
            NEXT_HOST.fetch_add(1, Ordering::SeqCst)
        );
        let write = |name: &str, text: &str, mode: u32| -> PathBuf {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            chown(&path, Some(user.uid), Some(user.gid)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        write("tls.crt", &files.cert_pem, 0o644);
        write("tls.key", &files.key_pem, 0o600);
        write("ca.crt", &files.ca_pem, 0o644);
        write("pg_hba.conf", &(files.pg_hba.join("\n") + "\n"), 0o644);
        let mut ident = files.pg_ident.clone();
        let me = nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .unwrap()
            .name;
        ident.push(format!("{} {me} postgres", tusk_config::hba::IDENT_MAP));
        write("pg_ident.conf", &(ident.join("\n") + "\n"), 0o644);
        let socket = dir.path().join("sock");
        std::fs::create_dir(&socket).unwrap();
        chown(&socket, Some(user.uid), Some(user.gid)).unwrap();

        let d = dir.path().display();
        let mut cmd = as_postgres("postgres");
        cmd.arg("-D").arg(&data);
        let mut set = |k: &str, v: &str| {
            cmd.args(["-c", &format!("{k}={v}")]);
        };
        for (k, v) in &files.parameters {
            set(k, v);
        }
        set("listen_addresses", &host);
        set("port", &PORT.to_string());
        set("unix_socket_directories", &socket.display().to_string());
        set("hba_file", &format!("{d}/pg_hba.conf"));
        set("ident_file", &format!("{d}/pg_ident.conf"));
        set("ssl_cert_file", &format!("{d}/tls.crt"));
        set("ssl_key_file", &format!("{d}/tls.key"));
        set("ssl_ca_file", &format!("{d}/ca.crt"));
        // Every statement that changes something is logged: the test counts them.
        set("log_statement", "ddl");
        set("fsync", "off");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("postgres.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let server = PgServer {
            dir,
            host,
            port: PORT,
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

    /// Statements the server logged as executed (`log_statement = ddl`).
    pub fn logged_statements(&self) -> usize {
        self.log().matches("LOG:  statement: ").count()
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// `psql -tA -c sql` as the superuser over the socket.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(Path::new(BIN).join("psql"))
            .args(["-X", "-tA", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .env_remove("PGPASSWORD")
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

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
