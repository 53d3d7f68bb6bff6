//! Golden files: the Patroni configuration rendered for `examples/02-hippo-ha.yaml` in both
//! DCS modes. A change in rendering shows up as a reviewable diff of the fixture; regenerate
//! with `TUSK_UPDATE_FIXTURES=1 cargo test -p tusk-config --test fixtures`.

use std::path::PathBuf;

use tusk_config::patroni::{cluster_yaml, kubernetes_env, member_yaml, Dcs, EtcdApi, Member};

fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn hippo_ha() -> tusk_api::ValidatedCluster {
    let manifest = std::fs::read_to_string(repo_file("../../examples/02-hippo-ha.yaml"))
        .expect("examples/02-hippo-ha.yaml exists");
    tusk_api::validate_yaml(&manifest).expect("the example validates")
}

/// Compares `rendered` with the fixture, or rewrites the fixture when asked to.
fn check_fixture(name: &str, rendered: &str) {
    let path = repo_file("tests/fixtures").join(name);
    if std::env::var_os("TUSK_UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, rendered).expect("fixture written");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with TUSK_UPDATE_FIXTURES=1",
            path.display()
        )
    });
    pretty_assertions::assert_eq!(
        expected,
        rendered,
        "{name} differs from the fixture; if intended, regenerate with TUSK_UPDATE_FIXTURES=1"
    );
}

#[test]
fn hippo_ha_kubernetes() {
    let cluster = hippo_ha();
    let dcs = Dcs::Kubernetes {
        namespace: "tusk".into(),
    };
    check_fixture("02-hippo-ha.kubernetes.yaml", &cluster_yaml(&cluster, &dcs));
    let env: String = kubernetes_env(&cluster)
        .into_iter()
        .map(|(name, value)| format!("{name}={value}\n"))
        .collect();
    check_fixture("02-hippo-ha.kubernetes.env", &env);
}

#[test]
fn hippo_ha_etcd3_member() {
    let member = Member {
        name: "hippo-instance1-0".into(),
        host: "127.0.0.2".into(),
        data_dir: "/var/lib/tusk/hippo/instance1-0/pgdata".into(),
        wal_dir: None,
        bin_dir: Some("/usr/lib/postgresql/15/bin".into()),
        socket_dir: "/var/lib/tusk/hippo/instance1-0/run".into(),
        server_tls_dir: "/var/lib/tusk/hippo/instance1-0/tls".into(),
        rest_api_ca_file: None,
        replication_tls_dir: "/var/lib/tusk/hippo/instance1-0/tls/replication".into(),
        os_user: "tusk".into(),
        role_change_callback: None,
    };
    let dcs = Dcs::Etcd {
        hosts: vec!["127.0.0.1:2379".into()],
        api: EtcdApi::V3,
    };
    check_fixture(
        "02-hippo-ha.etcd3-member.yaml",
        &member_yaml(&hippo_ha(), &dcs, &member),
    );
}
