//! The real Patroni checks what Tusk renders: `patroni --validate-config` on `member_yaml`
//! output (etcd3 DCS, against a real etcd it must reach) and on the Kubernetes `cluster_yaml`
//! completed with the values the pod's environment supplies. PyYAML, Patroni's own loader,
//! must read the files as the values Tusk meant.
//!
//! Needs `patroni`, `postgresql-15` and `etcd-server` (Debian packages, installed by CI). A
//! missing one fails the test with a message saying what to install; nothing is skipped.
//! Servers listen on 127.0.0.0/8 only, on ports picked free, in their own temp dirs.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tusk_config::patroni::{cluster_yaml, kubernetes_env, member_yaml, Dcs, EtcdApi, Member};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn find_program(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` not found: install it with `apt-get install -y {package}`")
        })
}

/// A TCP port nobody listens on at `host` right now.
fn free_port(host: &str) -> u16 {
    TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("cannot bind {host}: {e}"))
        .port()
}

/// `examples/02-hippo-ha.yaml` with PostgreSQL and Patroni on the given ports, because the
/// validator insists the listen ports are free.
fn hippo_ha(pg_port: u16, api_port: u16) -> tusk_api::ValidatedCluster {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/02-hippo-ha.yaml"
    );
    let mut manifest: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("example exists")).unwrap();
    manifest["spec"]["port"] = pg_port.into();
    manifest["spec"]["patroni"]["port"] = api_port.into();
    tusk_api::validate_yaml(&serde_yaml::to_string(&manifest).unwrap()).expect("valid")
}

/// A real etcd on 127.0.0.1, stopped and cleaned up on drop.
struct Etcd {
    child: Child,
    client: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let etcd = find_program("etcd", "etcd-server");
        let dir = tempfile::tempdir().unwrap();
        let client = format!("127.0.0.1:{}", free_port("127.0.0.1"));
        let peer = format!("http://127.0.0.1:{}", free_port("127.0.0.1"));
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new(etcd)
            .args(["--name", "validate", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &format!("http://{client}")])
            .args(["--advertise-client-urls", &format!("http://{client}")])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("validate={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        let etcd = Etcd {
            child,
            client,
            _dir: dir,
        };
        // Readiness, not a timing assertion: give up only after a generous bound.
        for _ in 0..300 {
            if TcpStream::connect(&etcd.client).is_ok() {
                return etcd;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(etcd._dir.path().join("etcd.log")).unwrap_or_default();
        panic!("etcd did not listen on {}:\n{log}", etcd.client);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `patroni --validate-config`; returns (success, combined output).
fn validate(file: &Path) -> (bool, String) {
    let out = Command::new(find_program("patroni", "patroni"))
        .arg("--validate-config")
        .arg(file)
        .output()
        .expect("patroni runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The document as PyYAML (YAML 1.1, what Patroni uses) reads it, as JSON.
fn pyyaml_load(file: &Path) -> Value {
    // The interpreter Patroni itself runs on has the yaml module Patroni uses.
    let patroni = std::fs::read_to_string(find_program("patroni", "patroni")).unwrap();
    let python = patroni
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .unwrap_or_else(|| "/usr/bin/python3".into());
    let out = Command::new(python)
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(file)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn member_in(dir: &Path, host: &str) -> Member {
    let sub = |name: &str| {
        let path = dir.join(name);
        std::fs::create_dir_all(&path).unwrap();
        path.to_str().unwrap().to_owned()
    };
    Member {
        name: "hippo-instance1-0".into(),
        host: host.into(),
        data_dir: sub("pgdata"),
        wal_dir: None,
        bin_dir: Some(PG_BIN.into()),
        socket_dir: sub("run"),
        server_tls_dir: sub("tls"),
        rest_api_ca_file: None,
        replication_tls_dir: sub("tls/replication"),
        os_user: "tusk".into(),
        role_change_callback: None,
    }
}

#[test]
fn patroni_accepts_the_member_file_for_tusk_local() {
    assert!(
        Path::new(PG_BIN).join("postgres").is_file(),
        "{PG_BIN}/postgres missing: install with `apt-get install -y postgresql-15`"
    );
    let etcd = Etcd::start();
    // Patroni refuses 127.0.0.1 as an advertised address; local members use 127.0.0.2+.
    let host = "127.0.0.2";
    let cluster = hippo_ha(free_port(host), free_port(host));
    let dir = tempfile::tempdir().unwrap();
    let member = member_in(dir.path(), host);
    let dcs = Dcs::Etcd {
        hosts: vec![etcd.client.clone()],
        api: EtcdApi::V3,
    };
    let rendered = member_yaml(&cluster, &dcs, &member);
    let file = dir.path().join("patroni.yaml");
    std::fs::write(&file, &rendered).unwrap();

    let (ok, output) = validate(&file);
    assert!(
        ok,
        "patroni rejected the member file:\n{output}\n{rendered}"
    );
    assert_eq!(output.trim(), "", "validator complained:\n{output}");

    let as_rendered: Value = serde_yaml::from_str(&rendered).unwrap();
    assert_eq!(pyyaml_load(&file), as_rendered, "PyYAML reads other values");

    // The check is not vacuous: the same file with a bin_dir lacking PostgreSQL fails.
    let empty_bin = dir.path().join("empty-bin");
    std::fs::create_dir(&empty_bin).unwrap();
    let broken = member_yaml(
        &cluster,
        &dcs,
        &Member {
            bin_dir: Some(empty_bin.to_str().unwrap().into()),
            ..member.clone()
        },
    );
    std::fs::write(&file, broken).unwrap();
    let (ok, output) = validate(&file);
    assert!(!ok, "an empty bin_dir passed validation");
    assert!(output.contains("bin_dir"), "{output}");
}

#[test]
fn patroni_accepts_the_kubernetes_file_with_the_pod_environment() {
    let host = "127.0.0.3";
    let cluster = hippo_ha(free_port(host), free_port(host));
    let rendered = cluster_yaml(
        &cluster,
        &Dcs::Kubernetes {
            namespace: "tusk".into(),
        },
    );
    // Fill in what the pod's environment supplies, the way Patroni does: the downward API
    // values, then kubernetes_env with `$(...)` expanded as Kubernetes would.
    let pod_ip = "10.244.1.7";
    let pod_name = "hippo-instance1-abcd-0";
    let mut doc: Value = serde_yaml::from_str(&rendered).unwrap();
    doc["name"] = pod_name.into();
    doc["kubernetes"]["pod_ip"] = pod_ip.into();
    for (name, value) in kubernetes_env(&cluster) {
        let value = value
            .replace("$(PATRONI_KUBERNETES_POD_IP)", pod_ip)
            .replace("$(PATRONI_NAME)", pod_name);
        assert!(
            !value.contains("$("),
            "unexpanded reference in {name}={value}"
        );
        match name.as_str() {
            "PATRONI_POSTGRESQL_CONNECT_ADDRESS" => {
                doc["postgresql"]["connect_address"] = value.into()
            }
            "PATRONI_RESTAPI_CONNECT_ADDRESS" => doc["restapi"]["connect_address"] = value.into(),
            other => panic!("test does not know how Patroni reads {other}"),
        }
    }
    // The pod's paths exist in the image; here they point at real stand-ins.
    let dir = tempfile::tempdir().unwrap();
    doc["postgresql"]["data_dir"] = dir.path().join("pgdata").to_str().unwrap().into();
    let file = dir.path().join("patroni.yaml");
    std::fs::write(&file, tusk_config::yaml::to_string(&doc)).unwrap();

    let (ok, output) = validate(&file);
    assert!(
        ok,
        "patroni rejected the Kubernetes file:\n{output}\n{rendered}"
    );
    assert_eq!(output.trim(), "", "validator complained:\n{output}");
    assert_eq!(pyyaml_load(&file), doc, "PyYAML reads other values");
}
