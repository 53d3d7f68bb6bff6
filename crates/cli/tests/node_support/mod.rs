//! Shared by the real-pod tests (`pods_*.rs`) and the pods benchmark: a single-node
//! Kubernetes cluster from `scripts/kube-testenv start --node` (kubelet, containerd, kube-proxy,
//! cluster DNS, local volumes and a registry, all in a network namespace of its own), Tusk's
//! images built by `scripts/build-images` and pushed to the node's registry, and the operator
//! installed the way a user installs it: `kubectl apply --server-side -k` of `deploy/kustomize`
//! through an overlay that only swaps in the locally built images.
//!
//! One node serves a whole test run when `scripts/test` started it (`TUSK_TEST_NODE=DIR`);
//! otherwise each test process starts a private one, stopped on drop (and by the script's
//! watchdog if the process dies first). Tests share a node by using a namespace each.
//!
//! `TUSK_SKIP_KUBE_TESTS=1` skips this tier, like the API server tier.

#![allow(dead_code)] // each test crate uses a different subset

pub mod install;
pub mod sql;
pub mod workloads;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::{Api, ListParams};
use kube::Client;
use serde_json::Value;

use super::kube_support::{eventually, objects, repo_root, testenv_script};

/// The environment variable naming a node started for the whole run.
pub const SHARED_NODE_ENV: &str = "TUSK_TEST_NODE";

/// A running single-node cluster.
pub struct Node {
    dir: PathBuf,
    /// Set when this process started the node (and stops it on drop).
    owned: Option<tempfile::TempDir>,
    /// `host:port` of the node's registry, as pods name their images.
    pub registry: String,
    pub ip: String,
}

impl Node {
    /// The run's shared node, or a private one; `None` when the Kubernetes tiers are skipped.
    pub fn acquire() -> Option<Node> {
        if super::kube_support::skipped() {
            return None;
        }
        match std::env::var(SHARED_NODE_ENV) {
            Ok(dir) if !dir.is_empty() => Some(Self::attach(PathBuf::from(dir), None)),
            _ => Some(Self::start_private()),
        }
    }

    fn start_private() -> Node {
        super::kube_support::assert_built();
        let dir = tempfile::Builder::new()
            .prefix("tusk-node-")
            .tempdir()
            .expect("a temporary directory");
        let out = Command::new(testenv_script())
            .args(["start", "--node"])
            .arg(dir.path())
            .env("KUBE_TESTENV_OWNER_PID", std::process::id().to_string())
            .output()
            .expect("scripts/kube-testenv runs");
        assert!(
            out.status.success(),
            "scripts/kube-testenv start --node failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::attach(dir.path().to_owned(), Some(dir))
    }

    fn attach(dir: PathBuf, owned: Option<tempfile::TempDir>) -> Node {
        let env_file = dir.join("node.env");
        let text = std::fs::read_to_string(&env_file)
            .unwrap_or_else(|e| panic!("{} (is the node started?): {e}", env_file.display()));
        let vars: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .collect();
        let var = |name: &str| {
            vars.get(name)
                .unwrap_or_else(|| panic!("{} has no {name}", env_file.display()))
                .to_string()
        };
        Node {
            registry: var("TUSK_NODE_REGISTRY"),
            ip: var("TUSK_NODE_IP"),
            dir,
            owned,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A client with the cluster admin's credentials (the tests' own view, not the operator's).
    pub async fn client(&self) -> Client {
        super::kube_support::client_from(&self.kubeconfig()).await
    }

    /// `kubectl ARGS` against the node, with `stdin` fed in when given.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("writing kubectl's stdin");
        }
        child.wait_with_output().expect("kubectl finishes")
    }

    /// `kubectl ARGS`, panicking with its output when it fails; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `sql` as the superuser in pod `pod`'s database container (peer authentication over
    /// the Unix socket, through `kubectl exec`): psql's unaligned output, trimmed, or its error.
    pub fn superuser_sql(&self, namespace: &str, pod: &str, sql: &str) -> Result<String, String> {
        let out = self.kubectl(
            &[
                "exec",
                "-n",
                namespace,
                pod,
                "-c",
                "database",
                "--",
                "psql",
                "-X",
                "-h",
                "/tmp/postgres",
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ],
            None,
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The node's logs directory, for failure messages.
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(dir) = &self.owned {
            let _ = Command::new(testenv_script())
                .arg("stop")
                .arg(dir.path())
                .status();
        }
    }
}

/// A test's namespace: created fresh (a leftover of an earlier run is deleted first), and
/// deleted on drop so the node's volumes go back to the pool.
pub struct Namespace<'a> {
    node: &'a Node,
    pub name: String,
}

impl<'a> Namespace<'a> {
    pub async fn create(node: &'a Node, client: &Client, name: &str) -> Namespace<'a> {
        let _ = node.kubectl(
            &[
                "delete",
                "namespace",
                name,
                "--ignore-not-found",
                "--wait=true",
            ],
            None,
        );
        objects::create_namespace(client, name).await;
        Namespace {
            node,
            name: name.to_owned(),
        }
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        // Not waited for: the next test does not need this namespace gone, only its own.
        let _ = self
            .node
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"], None);
    }
}

/// `path` (a manifest of `examples/`) with its namespace replaced by `namespace`, as YAML.
pub fn manifest_in(path: &Path, namespace: &str) -> String {
    let mut object = objects::manifest(path);
    object["metadata"]["namespace"] = Value::String(namespace.to_owned());
    serde_yaml::to_string(&object).expect("the manifest serializes")
}

/// Applies `path` into `namespace` with `kubectl apply`, as a user would.
pub fn apply_example(node: &Node, path: &Path, namespace: &str) {
    node.kubectl_ok(&["apply", "-f", "-"], Some(&manifest_in(path, namespace)));
}

/// A PostgresCluster's status condition `type_` as `(status, reason)`, when present.
pub async fn cluster_condition(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
) -> Option<(String, String)> {
    let cluster = objects::clusters(client, namespace).get(name).await.ok()?;
    let condition = objects::condition(&cluster, type_);
    Some((
        condition["status"].as_str()?.to_owned(),
        condition["reason"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Waits for condition `type_` to be `True`; the panic names its last state.
pub async fn wait_condition(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
    limit: Duration,
) {
    let what = format!("{namespace}/{name} condition {type_}=True");
    eventually(&what, limit, || async {
        let (status, _) = cluster_condition(client, namespace, name, type_).await?;
        (status == "True").then_some(())
    })
    .await
}

/// The instance pods of cluster `name`, by pod name.
pub async fn instance_pods(client: &Client, namespace: &str, name: &str) -> BTreeMap<String, Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "{},{}",
        tusk_api::naming::cluster_selector(name),
        tusk_api::naming::LABEL_INSTANCE
    );
    api.list(&ListParams::default().labels(&selector))
        .await
        .expect("listing instance pods")
        .items
        .into_iter()
        .filter_map(|pod| Some((pod.metadata.name.clone()?, pod)))
        .collect()
}

/// Who holds Patroni's leader lock: the `leader` annotation Patroni keeps on its leader
/// Endpoints `<scope>` through the Kubernetes API (`use_endpoints`).
pub async fn patroni_leader(client: &Client, namespace: &str, scope: &str) -> Option<String> {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), namespace);
    let endpoints = api.get(scope).await.ok()?;
    endpoints
        .metadata
        .annotations?
        .get("leader")
        .filter(|leader| !leader.is_empty())
        .cloned()
}

/// The IPs a Service's Endpoints list as ready.
pub async fn endpoint_ips(client: &Client, namespace: &str, service: &str) -> Vec<String> {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), namespace);
    let Ok(endpoints) = api.get(service).await else {
        return Vec::new();
    };
    endpoints
        .subsets
        .into_iter()
        .flatten()
        .flat_map(|subset| subset.addresses.into_iter().flatten())
        .map(|address| address.ip)
        .collect()
}

/// Patroni's view of a member, from the `status` annotation it keeps on its pod.
pub fn patroni_member_status(pod: &Pod) -> Option<Value> {
    let text = pod.metadata.annotations.as_ref()?.get("status")?;
    serde_json::from_str(text).ok()
}

/// A plain HTTP GET of `path` at `address` (`ip:port`, e.g. a pod's exporter); the body when the
/// answer is 200, `None` on any failure.
pub async fn http_get(address: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect(address);
    let mut stream = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .ok()?
        .ok()?;
    // HTTP/1.0: the body comes whole, never in chunks, and the server closes the connection.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_owned())
}
