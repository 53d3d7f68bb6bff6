//! Unit tests of the Patroni document: precedence of Tusk's and the user's settings, the
//! Kubernetes and etcd sections, standby clusters, and member-specific values.

use serde_json::{json, Value};

use super::*;
use crate::test_support::cluster_from;

fn example(name: &str) -> ValidatedCluster {
    let path = format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    cluster_from(&std::fs::read_to_string(&path).expect("example manifest exists"))
}

fn with_dynamic_configuration(dc: &str) -> ValidatedCluster {
    cluster_from(&format!(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: hippo, namespace: tusk}}
spec:
  postgresVersion: 15
  instances: [{{name: i1, dataVolumeClaimSpec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}}}]
  patroni:
    leaderLeaseDurationSeconds: 20
    syncPeriodSeconds: 6
    dynamicConfiguration: {dc}
"#
    ))
}

fn parse(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).expect("rendered YAML parses")
}

fn member() -> Member {
    Member {
        name: "hippo-0".into(),
        host: "127.0.0.2".into(),
        data_dir: "/state/hippo-0/data".into(),
        wal_dir: Some("/state/hippo-0/wal".into()),
        bin_dir: Some("/usr/lib/postgresql/15/bin".into()),
        socket_dir: "/state/hippo-0/run".into(),
        server_tls_dir: "/state/hippo-0/tls".into(),
        rest_api_ca_file: None,
        replication_tls_dir: "/state/hippo-0/tls/replication".into(),
        os_user: "alice".into(),
        role_change_callback: None,
    }
}

#[test]
fn user_settings_override_defaults_but_not_requirements() {
    let dcs = dynamic_configuration(&with_dynamic_configuration(
        "{maximum_lag_on_failover: 0, synchronous_mode: true, failsafe_mode: false, \
         postgresql: {use_pg_rewind: false, use_slots: false}, \
         standby_cluster: {host: 198.51.100.1}}",
    ));
    assert_eq!(dcs["maximum_lag_on_failover"], json!(0));
    assert_eq!(dcs["failsafe_mode"], json!(false));
    assert_eq!(dcs["synchronous_mode"], json!(true));
    assert_eq!(dcs["postgresql"]["use_slots"], json!(false));
    assert_eq!(dcs["postgresql"]["use_pg_rewind"], json!(true));
    // Only spec.standby makes a standby cluster.
    assert!(dcs.get("standby_cluster").is_none(), "{dcs:#}");
}

#[test]
fn failsafe_mode_is_on_by_default() {
    let dcs = dynamic_configuration(&with_dynamic_configuration("{}"));
    assert_eq!(dcs["failsafe_mode"], json!(true));
}

#[test]
fn timings_come_from_spec_patroni() {
    let dcs = dynamic_configuration(&with_dynamic_configuration("{}"));
    assert_eq!(dcs["ttl"], json!(20));
    assert_eq!(dcs["loop_wait"], json!(6));
    assert_eq!(dcs["retry_timeout"], json!(5));
}

#[test]
fn null_deletes_a_tusk_default() {
    let dcs = dynamic_configuration(&with_dynamic_configuration(
        "{maximum_lag_on_failover: null}",
    ));
    assert!(dcs.get("maximum_lag_on_failover").is_none());
}

#[test]
fn hippo_ha_passes_synchronous_mode_and_parameters_through() {
    let cluster = example("02-hippo-ha.yaml");
    let doc = parse(&cluster_yaml(
        &cluster,
        &Dcs::Kubernetes {
            namespace: "tusk".into(),
        },
    ));
    let dcs = &doc["bootstrap"]["dcs"];
    assert_eq!(dcs["synchronous_mode"], json!(true));
    let params = &dcs["postgresql"]["parameters"];
    assert_eq!(params["shared_buffers"], json!("128MB"));
    assert_eq!(params["max_worker_processes"], json!("2"));
    assert_eq!(params["synchronous_commit"], json!("on"));
    // Backups are configured in this example.
    assert_eq!(params["archive_mode"], json!("on"));
    assert_eq!(
        dcs["postgresql"]["pg_hba"].as_array().unwrap().last(),
        Some(&json!("host all all all reject"))
    );
    assert_eq!(doc["bootstrap"]["pg_hba"], dcs["postgresql"]["pg_hba"]);
}

#[test]
fn kubernetes_section_labels_pods_master_and_replica() {
    let cluster = example("02-hippo-ha.yaml");
    let doc = parse(&cluster_yaml(
        &cluster,
        &Dcs::Kubernetes {
            namespace: "tusk".into(),
        },
    ));
    let k8s = &doc["kubernetes"];
    assert_eq!(k8s["namespace"], json!("tusk"));
    assert_eq!(
        k8s["labels"],
        json!({"tusk.rs/cluster": "hippo", "tusk.rs/patroni": "hippo-ha"})
    );
    assert_eq!(k8s["scope_label"], json!("tusk.rs/patroni"));
    assert_eq!(k8s["role_label"], json!("tusk.rs/role"));
    assert_eq!(k8s["leader_label_value"], json!("master"));
    assert_eq!(k8s["standby_leader_label_value"], json!("master"));
    assert_eq!(k8s["follower_label_value"], json!("replica"));
    assert_eq!(k8s["use_endpoints"], json!(true));
    assert_eq!(k8s["bypass_api_service"], json!(false));
    assert_eq!(doc["scope"], json!("hippo-ha"));
    assert!(doc.get("etcd3").is_none());
    // Member identity comes from the environment in Kubernetes.
    assert!(doc.get("name").is_none());
    assert!(doc["postgresql"].get("connect_address").is_none());
    assert!(doc["restapi"].get("connect_address").is_none());
    assert_eq!(doc["postgresql"]["listen"], json!("*:5432"));
    assert_eq!(doc["restapi"]["listen"], json!("*:8008"));
    assert_eq!(doc["postgresql"]["data_dir"], json!("/pgdata/pg15"));
    assert_eq!(
        doc["postgresql"]["parameters"]["ssl_cert_file"],
        json!("/pgconf/tls/tls.crt")
    );
}

#[test]
fn kubernetes_env_advertises_the_pod_dns_name() {
    let cluster = example("02-hippo-ha.yaml");
    assert_eq!(
        kubernetes_env(&cluster),
        vec![
            (
                "PATRONI_POSTGRESQL_CONNECT_ADDRESS".to_string(),
                "$(PATRONI_NAME).hippo-pods.tusk.svc:5432".to_string()
            ),
            (
                "PATRONI_RESTAPI_CONNECT_ADDRESS".to_string(),
                "$(PATRONI_NAME).hippo-pods.tusk.svc:8008".to_string()
            ),
        ]
    );
    // Everything kubernetes_env refers to is set from the downward API.
    assert!(DOWNWARD_API_ENV
        .iter()
        .any(|(name, _)| *name == "PATRONI_NAME"));
}

#[test]
fn member_yaml_carries_the_member_identity_and_paths() {
    let cluster = example("02-hippo-ha.yaml");
    let doc = parse(&member_yaml(
        &cluster,
        &Dcs::Etcd {
            hosts: vec!["127.0.0.1:2379".into()],
            api: EtcdApi::V3,
        },
        &member(),
    ));
    assert_eq!(doc["name"], json!("hippo-0"));
    assert_eq!(doc["etcd3"]["hosts"], json!(["127.0.0.1:2379"]));
    assert!(doc.get("kubernetes").is_none());
    assert!(doc.get("etcd").is_none(), "one DCS section");
    let pg = &doc["postgresql"];
    assert_eq!(pg["listen"], json!("127.0.0.2:5432"));
    assert_eq!(pg["connect_address"], json!("127.0.0.2:5432"));
    assert_eq!(doc["restapi"]["connect_address"], json!("127.0.0.2:8008"));
    assert_eq!(pg["data_dir"], json!("/state/hippo-0/data"));
    assert_eq!(pg["bin_dir"], json!("/usr/lib/postgresql/15/bin"));
    assert_eq!(
        pg["parameters"]["unix_socket_directories"],
        json!("/state/hippo-0/run")
    );
    assert_eq!(
        pg["pg_ident"],
        json!([
            "tusk postgres postgres",
            "tusk alice postgres",
            "tusk-operator _tusk_operator postgres"
        ])
    );
    assert_eq!(
        pg["authentication"]["replication"]["sslcert"],
        json!("/state/hippo-0/tls/replication/tls.crt")
    );
    assert_eq!(
        pg["authentication"]["replication"]["sslmode"],
        json!("verify-ca")
    );
    assert_eq!(
        pg["authentication"]["rewind"],
        pg["authentication"]["replication"]
    );
    assert!(doc["bootstrap"]["initdb"]
        .as_array()
        .unwrap()
        .contains(&json!({"waldir": "/state/hippo-0/wal"})));
    assert!(pg["basebackup"]
        .as_array()
        .unwrap()
        .contains(&json!({"waldir": "/state/hippo-0/wal"})));
}

#[test]
fn standby_follows_host_and_repo() {
    let dcs = dynamic_configuration(&example("06-hippo-standby.yaml"));
    assert_eq!(
        dcs["standby_cluster"],
        json!({
            "host": "192.0.2.2",
            "port": 5432,
            "restore_command": "pgbackrest --stanza=db --repo=1 archive-get %f \"%p\"",
            "create_replica_methods": ["pgbackrest", "basebackup"],
        })
    );
}

#[test]
fn replicas_restore_from_the_repo_only_with_backups() {
    let with = parse(&cluster_yaml(
        &example("02-hippo-ha.yaml"),
        &Dcs::Kubernetes {
            namespace: "tusk".into(),
        },
    ));
    assert_eq!(
        with["postgresql"]["create_replica_methods"],
        json!(["pgbackrest", "basebackup"])
    );
    assert!(with["postgresql"]["pgbackrest"]["command"]
        .as_str()
        .unwrap()
        .contains("--pg1-path=/pgdata/pg15"));

    let without = parse(&cluster_yaml(
        &with_dynamic_configuration("{}"),
        &Dcs::Kubernetes {
            namespace: "tusk".into(),
        },
    ));
    assert_eq!(
        without["postgresql"]["create_replica_methods"],
        json!(["basebackup"])
    );
    assert!(without["postgresql"].get("pgbackrest").is_none());
}

#[test]
fn a_restore_bootstrap_keeps_pgbackrests_recovery_settings() {
    let cluster = example("01-hippo-basic.yaml");
    let dcs = Dcs::Etcd {
        hosts: vec!["127.0.0.1:2379".into()],
        api: EtcdApi::V3,
    };
    let command = "pgbackrest --stanza=db --repo=1 '--target=2024-05-01 10:00:00+00' restore";
    let restoring = parse(&member_yaml_bootstrapped(
        &cluster,
        &dcs,
        &member(),
        &Bootstrap::Restore {
            command: command.into(),
        },
    ));
    let bootstrap = &restoring["bootstrap"];
    assert_eq!(bootstrap["method"], json!(RESTORE_BOOTSTRAP_METHOD));
    let method = &bootstrap[RESTORE_BOOTSTRAP_METHOD];
    assert_eq!(method["command"], json!(command));
    assert_eq!(method["keep_existing_recovery_conf"], json!(true));
    assert_eq!(method["no_params"], json!(true));
    // The DCS section is still written: the restored cluster gets Tusk's settings.
    assert_eq!(bootstrap["dcs"], dynamic_configuration(&cluster));

    let fresh = parse(&member_yaml(&cluster, &dcs, &member()));
    assert!(fresh["bootstrap"].get("method").is_none(), "{fresh:#}");
    assert!(fresh["bootstrap"].get(RESTORE_BOOTSTRAP_METHOD).is_none());
}

#[test]
fn only_a_member_given_a_callback_has_patroni_callbacks() {
    let cluster = example("02-hippo-ha.yaml");
    let dcs = Dcs::Etcd {
        hosts: vec!["127.0.0.1:2379".into()],
        api: EtcdApi::V3,
    };
    let command = "/bin/sh '/state dir/pgbouncer/follow-primary.sh' hippo-0";
    let with = parse(&member_yaml(
        &cluster,
        &dcs,
        &Member {
            role_change_callback: Some(command.into()),
            ..member()
        },
    ));
    assert_eq!(
        with["postgresql"]["callbacks"],
        json!({ "on_start": command, "on_role_change": command })
    );
    let without = parse(&member_yaml(&cluster, &dcs, &member()));
    assert!(without["postgresql"].get("callbacks").is_none());
    let kubernetes = parse(&cluster_yaml(
        &cluster,
        &Dcs::Kubernetes {
            namespace: "tusk".into(),
        },
    ));
    assert!(kubernetes["postgresql"].get("callbacks").is_none());
}

fn standby(section: &str) -> ValidatedCluster {
    cluster_from(&format!(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: hippo-standby, namespace: tusk}}
spec:
  postgresVersion: 15
  instances: [{{name: i1, dataVolumeClaimSpec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}}}]
  backups:
    pgbackrest:
      repos:
        - name: repo1
          volume: {{volumeClaimSpec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}}}
        - name: repo2
          volume: {{volumeClaimSpec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}}}
  standby: {section}
"#
    ))
}

#[test]
fn a_repo_standby_replays_the_named_repo_and_seeds_without_a_remote_server() {
    let cluster = standby("{enabled: true, repoName: repo2}");
    assert_eq!(
        dynamic_configuration(&cluster)["standby_cluster"],
        json!({
            "restore_command": "pgbackrest --stanza=db --repo=2 archive-get %f \"%p\"",
            "create_replica_methods": ["pgbackrest"],
        })
    );
    let doc = parse(&member_yaml(
        &cluster,
        &Dcs::Etcd {
            hosts: vec!["127.0.0.1:2379".into()],
            api: EtcdApi::V3,
        },
        &member(),
    ));
    // Patroni drops every method needing a leader connection when the source has no host.
    assert_eq!(doc["postgresql"]["pgbackrest"]["no_leader"], json!(true));
}

#[test]
fn a_streaming_standby_authenticates_with_the_replication_certificate() {
    let cluster = standby("{enabled: true, host: 127.0.0.9}");
    let dcs = dynamic_configuration(&cluster);
    assert_eq!(
        dcs["standby_cluster"],
        json!({"host": "127.0.0.9", "port": 5432, "create_replica_methods": ["basebackup"]})
    );
    let doc = parse(&member_yaml(
        &cluster,
        &Dcs::Etcd {
            hosts: vec!["127.0.0.1:2379".into()],
            api: EtcdApi::V3,
        },
        &member(),
    ));
    let replication = &doc["postgresql"]["authentication"]["replication"];
    assert_eq!(replication["username"], json!("_tusk_repl"));
    assert_eq!(
        replication["sslcert"],
        json!("/state/hippo-0/tls/replication/tls.crt")
    );
    assert_eq!(
        replication["sslrootcert"],
        json!("/state/hippo-0/tls/replication/ca.crt")
    );
    // Streaming needs the leader connection: no repo seeding without one.
    assert!(doc["postgresql"]["pgbackrest"].get("no_leader").is_none());
}

#[test]
fn disabling_the_standby_removes_standby_cluster_so_a_patch_promotes() {
    let promoted = standby("{enabled: false, repoName: repo1, host: 127.0.0.9}");
    let dcs = dynamic_configuration(&promoted);
    assert!(dcs.get("standby_cluster").is_none(), "{dcs:#}");
    let doc = parse(&member_yaml(
        &promoted,
        &Dcs::Etcd {
            hosts: vec!["127.0.0.1:2379".into()],
            api: EtcdApi::V3,
        },
        &member(),
    ));
    assert!(doc["bootstrap"]["dcs"].get("standby_cluster").is_none());
    assert!(doc["postgresql"]["pgbackrest"].get("no_leader").is_none());
}

#[test]
fn etcd_v2_renders_patronis_etcd_section_alone() {
    let cluster = example("02-hippo-ha.yaml");
    let doc = parse(&member_yaml(
        &cluster,
        &Dcs::Etcd {
            hosts: vec!["127.0.0.1:2379".into()],
            api: EtcdApi::V2,
        },
        &member(),
    ));
    assert_eq!(doc["etcd"]["hosts"], json!(["127.0.0.1:2379"]));
    assert!(doc.get("etcd3").is_none(), "one DCS section");
}

#[test]
fn etcd_api_is_v2_until_patroni_stops_overwriting_the_leader_key_on_v3() {
    // Debian bookworm's Patroni re-puts the leader key unconditionally on v3.
    assert_eq!(EtcdApi::for_patroni((3, 0, 2)), EtcdApi::V2);
    assert_eq!(EtcdApi::for_patroni((2, 1, 6)), EtcdApi::V2);
    assert_eq!(EtcdApi::for_patroni((3, 0, 3)), EtcdApi::V3);
    assert_eq!(EtcdApi::for_patroni((3, 3, 0)), EtcdApi::V3);
    assert_eq!(EtcdApi::for_patroni((4, 1, 5)), EtcdApi::V3);
}

#[test]
fn the_rest_api_ca_file_can_be_named_by_the_caller() {
    let cluster = example("02-hippo-ha.yaml");
    let dcs = Dcs::Etcd {
        hosts: vec!["127.0.0.1:2379".into()],
        api: EtcdApi::V2,
    };
    let default = parse(&member_yaml(&cluster, &dcs, &member()));
    assert_eq!(
        default["restapi"]["cafile"],
        json!("/state/hippo-0/tls/ca.crt")
    );
    let named = Member {
        rest_api_ca_file: Some("/state/hippo-0/tls/ca-0123abcd.crt".into()),
        ..member()
    };
    let doc = parse(&member_yaml(&cluster, &dcs, &named));
    assert_eq!(
        doc["restapi"]["cafile"],
        json!("/state/hippo-0/tls/ca-0123abcd.crt")
    );
    // PostgreSQL reloads its CA file by name on every reload: it keeps the plain one.
    assert_eq!(
        doc["postgresql"]["parameters"]["ssl_ca_file"],
        json!("/state/hippo-0/tls/ca.crt")
    );
}
