//! Shared by the real-API-server tests (`kube_*.rs`): a control plane started by
//! `scripts/kube-testenv` (etcd + kube-apiserver + kube-controller-manager built from Debian's
//! `kubernetes` source package) in a temporary directory, the real `tusk operator` binary as
//! a process against it, and helpers to install the CRD, create clusters, snapshot objects and
//! wait for conditions. Everything it starts listens on 127.0.0.1 and is stopped on drop; the
//! script's watchdog stops the control plane even if the test process dies first.
//!
//! Set `TUSK_SKIP_KUBE_TESTS=1` to skip this tier on a machine without the built binaries
//! (`scripts/kube-testenv build`); without it, missing binaries fail the tests.

#![allow(dead_code)] // each test crate uses a different subset

pub mod objects;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn testenv_script() -> PathBuf {
    repo_root().join("scripts/kube-testenv")
}

/// `true` (with a note on stderr) when this tier is switched off by `TUSK_SKIP_KUBE_TESTS`.
pub fn skipped() -> bool {
    let skip = std::env::var("TUSK_SKIP_KUBE_TESTS").is_ok_and(|v| !v.is_empty() && v != "0");
    if skip {
        eprintln!("TUSK_SKIP_KUBE_TESTS is set: skipping the real kube-apiserver test");
    }
    skip
}

/// etcd, kube-apiserver and kube-controller-manager in a temporary directory.
pub struct ControlPlane {
    dir: tempfile::TempDir,
}

/// Panics, saying what to run, when `scripts/kube-testenv build` has not built the binaries.
pub fn assert_built() {
    let built = Command::new(testenv_script())
        .arg("bin-dir")
        .output()
        .expect("scripts/kube-testenv runs");
    assert!(
        built.status.success(),
        "the Kubernetes binaries are not built: run `scripts/kube-testenv build` \
         (or set TUSK_SKIP_KUBE_TESTS=1 to skip the Kubernetes tiers):\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
}

/// A client with the credentials of `kubeconfig`.
pub async fn client_from(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    tusk_local::tls::install_crypto_provider();
    Client::try_from(config).expect("a client")
}

impl ControlPlane {
    /// Starts a fresh control plane; panics with the script's output if it cannot.
    pub fn start() -> Self {
        assert_built();
        let dir = tempfile::Builder::new()
            .prefix("tusk-kube-testenv-")
            .tempdir()
            .expect("a temporary directory");
        let out = Command::new(testenv_script())
            .arg("start")
            .arg(dir.path())
            // The script's watchdog stops everything once this test process is gone.
            .env("KUBE_TESTENV_OWNER_PID", std::process::id().to_string())
            .output()
            .expect("scripts/kube-testenv runs");
        assert!(
            out.status.success(),
            "scripts/kube-testenv start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir().join("kubeconfig")
    }

    /// A client with the admin credentials of the kubeconfig.
    pub async fn client(&self) -> Client {
        client_from(&self.kubeconfig()).await
    }
}

/// The prologue of every test of this tier: `None` when the tier is switched off; otherwise
/// a fresh control plane, an admin client, the CRD when `with_crd`, and `namespaces` created.
pub async fn control_plane(with_crd: bool, namespaces: &[&str]) -> Option<(ControlPlane, Client)> {
    if skipped() {
        return None;
    }
    let plane = ControlPlane::start();
    let client = plane.client().await;
    if with_crd {
        objects::install_crd(&client).await;
    }
    for namespace in namespaces {
        objects::create_namespace(&client, namespace).await;
    }
    Some((plane, client))
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new(testenv_script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// A free port on 127.0.0.1 for the operator's HTTP server.
pub fn free_local_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    listener.local_addr().expect("a local address")
}

/// The namespace every operator of these tests keeps its Lease and root CA in.
pub const OPERATOR_NAMESPACE: &str = "tusk-system";
/// Short, so a takeover after a killed leader is quick; the operator's minimum is 3.
pub const LEASE_SECONDS: &str = "4";

/// A `tusk operator` process (the binary under test) against a control plane.
pub struct Operator {
    child: Child,
    pub identity: String,
    pub http: SocketAddr,
    log: PathBuf,
}

impl Operator {
    /// Starts `tusk operator` watching every namespace, as `identity`, with `extra_env`.
    pub fn start(plane: &ControlPlane, identity: &str, extra_env: &[(&str, &str)]) -> Self {
        let http = free_local_address();
        let log = plane.dir().join(format!("operator-{identity}.log"));
        let log_file = std::fs::File::create(&log).expect("operator log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tusk"));
        command
            .args(["operator", "--lease-duration-seconds", LEASE_SECONDS])
            .env("KUBECONFIG", plane.kubeconfig())
            .env("WATCH_NAMESPACE", "")
            .env("POD_NAMESPACE", OPERATOR_NAMESPACE)
            .env("POD_NAME", identity)
            .env("TUSK_HTTP_ADDRESS", http.to_string())
            .env("RUST_LOG", "info")
            .env_remove("TUSK_BUILD_VERSION")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file handle"))
            .stderr(log_file);
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let child = command.spawn().expect("the tusk binary starts");
        Self {
            child,
            identity: identity.to_owned(),
            http,
            log,
        }
    }

    /// The operator's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Completed reconciles (successful or not) from `/metrics`; `None` while it does not
    /// answer yet.
    pub async fn reconciles(&self) -> Option<u64> {
        let text = http_get(self.http, "/metrics").await?;
        Some(
            text.lines()
                .filter(|l| l.starts_with("tusk_reconciles_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64,
        )
    }

    /// Waits until at least `more` reconciles completed after the count was `from`.
    pub async fn wait_reconciles(&self, from: u64, more: u64) -> u64 {
        let what = format!("{} reconciles by {} after {from}", more, self.identity);
        let total = eventually(&what, Duration::from_secs(120), || async {
            self.reconciles().await.filter(|n| *n >= from + more)
        })
        .await;
        total
    }

    /// SIGTERM (the operator releases its Lease) and wait for the exit.
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// SIGTERM, then whether the process exited within `limit` (killed if it did not).
    pub async fn terminate_within(mut self, limit: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.has_exited() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// SIGKILL: a crash, the Lease is not released.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET on loopback (one request, then the server closes) (the operator's metrics server); `None` on any failure.
async fn http_get(address: SocketAddr, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `limit` (a deadline
/// against hanging forever, not a timing assertion).
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
