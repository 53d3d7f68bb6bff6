//! The reload sidecars' script (`build::reload_sidecar::RELOAD_ON_CHANGE_SCRIPT`, the very
//! text rendered into the pods' `tls-reload` and `pgbackrest-config` containers) against a
//! REAL PostgreSQL 15 and a REAL `pgbackrest server` of this test's own.
//!
//! The watched files live in a directory laid out the way the kubelet lays out a projected
//! volume (`..<timestamp>/` with the files, `..data` pointing at it, top-level symlinks through
//! `..data`), and are rotated the way the kubelet rotates them: a new timestamped directory,
//! then one rename of `..data`. The script runs as the `postgres` OS user (the pod's UID, no
//! capability) and is told to signal the process whose command line has an argument naming
//! this test's own temporary directory, which only the test's server has (in the pods it is
//! Patroni's configuration file and `server`).
//!
//! PostgreSQL: nothing is signalled while the files stay the same; after the rotation a new TLS
//! handshake (`openssl s_client -starttls postgres`) presents the new certificate, a client
//! certificate of a CA that only the new `ca.crt` holds is accepted, and the session opened
//! before the rotation keeps its backend, on a postmaster that was never restarted.
//!
//! pgBackRest: a client whose certificate CN `tls-server-auth` does not name is refused
//! (`access denied`); once the configuration admits it, the same server process (same PID)
//! serves it, and a connection worker forked before the change (same arguments as the server)
//! was not signalled: a SIGHUP ends such a worker and the transfer it serves.

mod common;

use std::ffi::OsStr;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::postgres::{PgServer, ServerFiles};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Pid, User};
use time::OffsetDateTime;
use tusk_api::naming::{OPERATOR_CLIENT_CN, REPLICATION_USER};
use tusk_config::parameters::PGBACKREST_STANZA;
use tusk_operator::build::reload_sidecar::{
    ENV_POLL_SECONDS, ENV_SIGNAL_ARG, ENV_WATCH_DIR, RELOAD_ON_CHANGE_SCRIPT,
};
use tusk_pki::{Leaf, RootCa};
use tusk_sql::{ClientCert, ConnectTarget, Pem};

const SERVER_NAME: &str = "hippo-primary.db.svc";
const RELOAD_LOG_LINE: &str = "received SIGHUP, reloading configuration files";

fn cluster() -> tusk_api::ValidatedCluster {
    tusk_api::validate_yaml(
        "apiVersion: tusk.rs/v1beta1\nkind: PostgresCluster\nmetadata: {name: hippo, namespace: db}\nspec:\n  postgresVersion: 15\n  instances: [{dataVolumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}]\n",
    )
    .unwrap()
}

fn postgres_user() -> User {
    User::from_name("postgres")
        .unwrap()
        .expect("postgres OS user")
}

/// A projected-volume-like certificate directory (see the module header).
struct KubeletDir {
    root: PathBuf,
    generation: u32,
}

impl KubeletDir {
    fn new(root: PathBuf, files: &[(&str, &str)]) -> Self {
        std::fs::create_dir(&root).unwrap();
        let mut dir = KubeletDir {
            root,
            generation: 0,
        };
        dir.publish(files);
        for (name, _) in files {
            symlink(format!("..data/{name}"), dir.root.join(name)).unwrap();
        }
        dir.chown_all();
        dir
    }

    /// Writes a new timestamped directory and swaps `..data` to it in one rename.
    fn publish(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let name = format!("..2030_01_01_00_00_0{}.000000001", self.generation);
        let data_dir = self.root.join(&name);
        std::fs::create_dir(&data_dir).unwrap();
        for (file, text) in files {
            let path = data_dir.join(file);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        self.chown_all();
        let tmp_link = self.root.join("..data_tmp");
        symlink(&name, &tmp_link).unwrap();
        std::fs::rename(&tmp_link, self.root.join("..data")).unwrap();
    }

    fn chown_all(&self) {
        let user = postgres_user();
        for entry in walk(&self.root) {
            std::os::unix::fs::lchown(&entry, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .unwrap();
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_owned()];
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A program run as the postgres OS user in its own process group, its stdout in `log`; the
/// group is killed on drop (also when the test panics), so nothing the test started outlives
/// it.
struct PostgresProcess {
    child: Child,
    log: PathBuf,
}

impl PostgresProcess {
    fn spawn(mut command: Command, log: PathBuf, what: &str) -> PostgresProcess {
        let user = postgres_user();
        let child = command
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .process_group(0)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("running {what}: {e}"));
        PostgresProcess { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PostgresProcess {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The watcher script with a 1 s poll.
fn start_watcher(watch_dir: &Path, signal_arg: impl AsRef<OsStr>, log: PathBuf) -> PostgresProcess {
    let mut command = Command::new("sh");
    command
        .args(["-c", RELOAD_ON_CHANGE_SCRIPT])
        .env(ENV_WATCH_DIR, watch_dir)
        .env(ENV_SIGNAL_ARG, signal_arg)
        .env(ENV_POLL_SECONDS, "1");
    PostgresProcess::spawn(command, log, "sh")
}

/// The certificate the server presents to a new TLS connection, as the real
/// `openssl s_client -starttls postgres` receives it (PEM body lines).
fn presented_certificate(server: &PgServer) -> Vec<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-starttls", "postgres", "-connect"])
        .arg(format!("{}:{}", server.host, server.port))
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (apt-get install openssl)");
    pem_body(&String::from_utf8_lossy(&out.stdout))
}

/// The base64 lines of the first certificate in `text`.
fn pem_body(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN CERTIFICATE-----")
        .skip(1)
        .take_while(|l| *l != "-----END CERTIFICATE-----")
        .map(str::to_owned)
        .collect()
}

/// The superuser over TLS with `leaf` as its client certificate (the operator's way in).
fn operator_target(server: &PgServer, ca_pem: &str, leaf: &Leaf) -> ConnectTarget {
    ConnectTarget {
        host: SERVER_NAME.into(),
        hostaddr: Some(server.host.parse().unwrap()),
        port: server.port,
        socket_dir: None,
        user: "postgres".into(),
        ca: Some(Pem::Text(ca_pem.to_owned())),
        client_cert: Some(ClientCert {
            cert: Pem::Text(leaf.cert_pem.clone()),
            key: Pem::Text(leaf.key_pem.clone()),
        }),
        password: None,
    }
}

/// Replaces `link` (a file the server was started with) by a symlink to `target`.
fn point_at(link: &Path, target: &Path) {
    let tmp = link.with_extension("link-tmp");
    symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificate_files_are_reloaded_without_a_restart() {
    let now = OffsetDateTime::now_utc();
    let old_root = RootCa::generate(now).unwrap();
    let new_root = RootCa::generate(now).unwrap();
    let dns = [SERVER_NAME.to_owned()];
    let old_leaf = old_root.issue_server("hippo-primary", &dns, now).unwrap();
    let new_leaf = old_root.issue_server("hippo-primary", &dns, now).unwrap();
    let old_operator = old_root.issue_client(OPERATOR_CLIENT_CN, now).unwrap();
    let new_operator = new_root.issue_client(OPERATOR_CLIENT_CN, now).unwrap();

    let cluster = cluster();
    let server = PgServer::start(&ServerFiles {
        pg_hba: tusk_config::hba::pg_hba(&cluster),
        pg_ident: tusk_config::hba::pg_ident("postgres"),
        parameters: vec![("ssl".into(), "on".into())],
        cert_pem: old_leaf.cert_pem.clone(),
        key_pem: old_leaf.key_pem.clone(),
        ca_pem: old_root.cert_pem().to_owned(),
    });
    // The server's three files become links into a kubelet-style directory.
    let mut tls = KubeletDir::new(
        server.dir.path().join("tls"),
        &[
            ("tls.crt", &old_leaf.cert_pem),
            ("tls.key", &old_leaf.key_pem),
            ("ca.crt", old_root.cert_pem()),
        ],
    );
    for name in ["tls.crt", "tls.key", "ca.crt"] {
        point_at(&server.dir.path().join(name), &tls.file(name));
    }
    let data_dir = server.dir.path().join("data");
    let postmaster_pid = std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap();
    let postmaster_pid = postmaster_pid.lines().next().unwrap().to_owned();

    assert_eq!(presented_certificate(&server), pem_body(&old_leaf.cert_pem));
    let session = tusk_sql::connect(
        &operator_target(&server, old_root.cert_pem(), &old_operator),
        "postgres",
    )
    .await
    .expect("the operator certificate of the current root gets in");
    let before = session
        .query_one(
            "SELECT pg_backend_pid(), pg_postmaster_start_time()::text",
            &[],
        )
        .await
        .unwrap();
    let (backend_pid, started): (i32, String) = (before.get(0), before.get(1));
    let refused = tusk_sql::connect(
        &operator_target(&server, old_root.cert_pem(), &new_operator),
        "postgres",
    )
    .await;
    assert!(refused.is_err(), "the new root is not trusted yet");

    let watcher = start_watcher(&tls.root, &data_dir, server.dir.path().join("watcher.log"));
    wait_for("the watcher to start", || {
        watcher.log().contains("reload-on-change: watching")
    });
    // Unchanged files: no signal (the watcher polls every second).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(server.log().matches(RELOAD_LOG_LINE).count(), 0);
    assert!(!watcher.log().contains("SIGHUP"), "{}", watcher.log());

    // The kubelet's rotation: new leaf (same root) and a bundle that adds the new root.
    let bundle = tusk_pki::trust_bundle(&[new_root.cert_pem(), old_root.cert_pem()]);
    tls.publish(&[
        ("tls.crt", &new_leaf.cert_pem),
        ("tls.key", &new_leaf.key_pem),
        ("ca.crt", &bundle),
    ]);
    wait_for("PostgreSQL to reload", || {
        server.log().contains(RELOAD_LOG_LINE)
    });
    assert!(
        watcher
            .log()
            .contains(&format!("sent SIGHUP to {postmaster_pid}")),
        "only the test's postmaster is signalled: {}",
        watcher.log()
    );
    wait_for("the new certificate", || {
        presented_certificate(&server) == pem_body(&new_leaf.cert_pem)
    });
    assert_ne!(pem_body(&new_leaf.cert_pem), pem_body(&old_leaf.cert_pem));
    // ssl_ca_file was re-read too: the new root's client certificate is accepted now.
    let fresh = tusk_sql::connect(
        &operator_target(&server, old_root.cert_pem(), &new_operator),
        "postgres",
    )
    .await
    .expect("a client certificate of the new root gets in after the reload");
    let fresh_pid: i32 = fresh
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(fresh_pid, backend_pid);

    // The session opened before the rotation is the same backend, on the same postmaster.
    let after = session
        .query_one(
            "SELECT pg_backend_pid(), pg_postmaster_start_time()::text",
            &[],
        )
        .await
        .expect("the old session still works");
    assert_eq!(after.get::<_, i32>(0), backend_pid);
    assert_eq!(after.get::<_, String>(1), started);
    let pid_file = std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap();
    assert_eq!(pid_file.lines().next().unwrap(), postmaster_pid);
    assert_eq!(
        server.log().matches(RELOAD_LOG_LINE).count(),
        watcher.log().matches("sent SIGHUP").count(),
        "one reload per signal: {}",
        watcher.log()
    );
}

/// A free TCP port on 127.0.0.1 (the OS's pick; released for the server to bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The pgBackRest server's `conf.d` file: the TLS server on `port`, admitting client
/// certificates with CN `admitted_cn` to the stanza, its certificates beside it in `conf_d`.
fn server_conf(dir: &Path, conf_d: &Path, port: u16, admitted_cn: &str) -> String {
    let tls = |file: &str| conf_d.join(file).display().to_string();
    format!(
        "[global]\ntls-server-address=127.0.0.1\ntls-server-port={port}\n\
         tls-server-ca-file={ca}\ntls-server-cert-file={cert}\ntls-server-key-file={key}\n\
         tls-server-auth={admitted_cn}={PGBACKREST_STANZA}\nrepo1-path={repo}\n\
         log-level-file=off\nlock-path={lock}\n",
        ca = tls("ca.crt"),
        cert = tls("server.crt"),
        key = tls("server.key"),
        repo = dir.join("repo").display(),
        lock = dir.join("server-lock").display(),
    )
}

/// The files of the server's `conf.d`, as the pods' `pgbackrest-config` volume holds them.
fn server_files<'a>(conf: &'a str, root: &'a RootCa, leaf: &'a Leaf) -> [(&'a str, &'a str); 4] {
    [
        ("tusk.conf", conf),
        ("ca.crt", root.cert_pem()),
        ("server.crt", &leaf.cert_pem),
        ("server.key", &leaf.key_pem),
    ]
}

/// A real `pgbackrest server` (see [`PostgresProcess`]) reading its configuration from
/// `<config_path>/conf.d` (pgBackRest's `config-include-path` under `--config-path`, as
/// `/etc/pgbackrest/conf.d` in the pods).
fn start_backrest_server(config_path_arg: &str, log: PathBuf) -> PostgresProcess {
    let mut command = Command::new("pgbackrest");
    command
        .arg(config_path_arg)
        // The reload is logged at `detail`.
        .args(["--log-level-console=detail", "server"]);
    PostgresProcess::spawn(command, log, "pgbackrest (apt-get install pgbackrest)")
}

/// `pgbackrest info` through the server at `port` (as the repo host reaches an instance), with
/// the client certificate files in `client`: stdout and stderr together.
fn info_through_server(client: &Path, port: u16) -> String {
    let user = postgres_user();
    let file = |name: &str| client.join(name).display().to_string();
    let out = Command::new("pgbackrest")
        .arg(format!("--config-path={}", client.display()))
        .arg(format!("--stanza={PGBACKREST_STANZA}"))
        // A DNS name: pgBackRest checks the server certificate against names only.
        .arg("--repo1-host=localhost")
        .arg("--repo1-host-type=tls")
        .arg(format!("--repo1-host-port={port}"))
        .arg(format!("--repo1-host-ca-file={}", file("ca.crt")))
        .arg(format!("--repo1-host-cert-file={}", file("client.crt")))
        .arg(format!("--repo1-host-key-file={}", file("client.key")))
        .arg(format!("--lock-path={}", file("lock")))
        .args(["--log-level-file=off", "--log-level-console=warn", "info"])
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .output()
        .expect("run pgbackrest");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// PIDs of the processes whose parent is `parent`, from `/proc/<pid>/stat`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces, so look after its `)`.
        let after_comm = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        if after_comm.split_whitespace().nth(1) == Some(parent.to_string().as_str()) {
            children.push(pid);
        }
    }
    children
}

/// Creates `path` (a directory, or a file with `text`) owned by the postgres OS user.
fn create_as_postgres(path: &Path, text: Option<&str>) {
    let user = postgres_user();
    match text {
        Some(text) => {
            std::fs::write(path, text).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        None => std::fs::create_dir_all(path).unwrap(),
    }
    std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
}

#[test]
fn pgbackrest_server_reloads_tls_server_auth_without_a_restart() {
    let now = OffsetDateTime::now_utc();
    let root = RootCa::generate(now).unwrap();
    let leaf = root
        .issue_server("localhost", &["localhost".to_owned()], now)
        .unwrap();
    // The identity the repo host presents to instances (and they to it).
    let client_leaf = root.issue_client(REPLICATION_USER, now).unwrap();

    let tmp = tempfile::Builder::new()
        .prefix("tusk-pgbackrest-reload")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    for sub in ["", "server", "client", "client/conf.d", "repo"] {
        create_as_postgres(&dir.join(sub), None);
    }
    let client = dir.join("client");
    for (name, text) in [
        ("ca.crt", root.cert_pem()),
        ("client.crt", &client_leaf.cert_pem),
        ("client.key", &client_leaf.key_pem),
    ] {
        create_as_postgres(&client.join(name), Some(text));
    }
    let port = free_port();
    let conf_d_path = dir.join("server/conf.d");
    let denied = server_conf(dir, &conf_d_path, port, "someone-else");
    let mut conf_d = KubeletDir::new(conf_d_path.clone(), &server_files(&denied, &root, &leaf));
    let config_path_arg = format!("--config-path={}", dir.join("server").display());
    let server = start_backrest_server(&config_path_arg, dir.join("server.log"));
    let server_pid = server.child.id();

    let mut last = String::new();
    wait_for("the server to refuse the client it does not name", || {
        last = info_through_server(&client, port);
        last.contains("access denied")
    });

    // A connection worker, forked by the server with the server's own arguments, waiting for
    // this connection's first message (the workers of the `info` calls above may still be
    // exiting: the new one is the one that was not there before).
    let earlier_workers = children_of(server_pid);
    let held = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut worker = None;
    wait_for("the server to fork a connection worker", || {
        worker = (children_of(server_pid).into_iter()).find(|pid| !earlier_workers.contains(pid));
        worker.is_some()
    });
    let worker = worker.unwrap();

    let watcher = start_watcher(&conf_d.root, &config_path_arg, dir.join("watcher.log"));
    wait_for("the watcher to start", || {
        watcher.log().contains("reload-on-change: watching")
    });
    // Unchanged files: no signal (the watcher polls every second).
    std::thread::sleep(Duration::from_secs(3));
    assert!(!watcher.log().contains("SIGHUP"), "{}", watcher.log());
    assert!(!server.log().contains("configuration reload begin"));

    let admitted = server_conf(dir, &conf_d_path, port, REPLICATION_USER);
    conf_d.publish(&server_files(&admitted, &root, &leaf));
    wait_for("the client to be admitted", || {
        last = info_through_server(&client, port);
        !last.contains("access denied")
    });
    // Admitted: the server listed the (empty) repository for the client.
    assert!(last.contains("missing stanza path"), "{last}");
    assert!(server.log().contains("configuration reload begin"));

    // The same server process, signalled alone: never its worker.
    assert!(
        nix::sys::signal::kill(Pid::from_raw(server_pid as i32), None).is_ok(),
        "the server {server_pid} still runs"
    );
    let output = watcher.log();
    let sent: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("sent SIGHUP"))
        .collect();
    assert_eq!(sent.len(), 1, "{output}");
    assert!(
        sent[0].ends_with(&format!("sent SIGHUP to {server_pid}")),
        "{output}"
    );
    assert!(
        children_of(server_pid).contains(&worker),
        "the connection worker {worker} forked before the change still runs"
    );
    drop(held);
}
