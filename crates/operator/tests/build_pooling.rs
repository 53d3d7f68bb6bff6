//! Targeted assertions on the PgBouncer and exporter objects: which exist when, the user
//! Secret's pooler keys, restricted pods, reload wiring, TLS sources, and that bad
//! `pgbouncer.config` input is refused with its field path.

#[path = "fixtures/support.rs"]
mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PodSpec, Secret};
use tusk_api::naming;
use tusk_operator::build::Managed;

use support::*;

const BASE: &str = r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {name: zebra, namespace: tusk}
spec:
  postgresVersion: 15
  instances:
    - dataVolumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#;

fn deployment(objects: &[Managed]) -> &Deployment {
    match find(objects, "Deployment", "keycloakdb-pgbouncer") {
        Managed::Deployment(d) => d,
        _ => unreachable!(),
    }
}

fn pod(d: &Deployment) -> &PodSpec {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    Some(String::from_utf8(bytes.0.clone()).unwrap())
}

#[test]
fn example_03_gets_a_restricted_reloading_pooler_and_exporters() {
    let objects = build_placeholders(&example("03"));
    for (kind, name) in [
        ("ConfigMap", "keycloakdb-pgbouncer"),
        ("Secret", "keycloakdb-pgbouncer"),
        ("Service", "keycloakdb-pgbouncer"),
        ("ConfigMap", "keycloakdb-exporter-queries-config"),
        ("Secret", "keycloakdb-monitoring"),
    ] {
        find(&objects, kind, name);
    }
    let d = deployment(&objects);
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    let pod = pod(d);
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["pgbouncer", "pgbouncer-config"]);
    // The sidecar can only signal PgBouncer inside one process namespace.
    assert_eq!(pod.share_process_namespace, Some(true));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    for c in &pod.containers {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
    }
    let script = &pod.containers[1].command.as_ref().unwrap()[2];
    assert!(script.contains("kill -HUP"), "{script}");
    // The user's tolerations and affinity reach the pod.
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].value.as_deref(),
        Some("connection-poolers")
    );
    assert!(pod.affinity.as_ref().unwrap().pod_anti_affinity.is_some());

    for sts in statefulsets(&objects) {
        let spec = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let exporter = spec
            .containers
            .iter()
            .find(|c| c.name == naming::CONTAINER_EXPORTER)
            .expect("exporter sidecar");
        assert_eq!(exporter.ports.as_ref().unwrap()[0].container_port, 9187);
        let env = exporter.env.as_ref().unwrap();
        let user = env.iter().find(|e| e.name == "DATA_SOURCE_USER").unwrap();
        assert_eq!(user.value.as_deref(), Some("_tusk_exporter"));
        // The password comes from a projected file, never from the environment.
        let pass = env
            .iter()
            .find(|e| e.name == "DATA_SOURCE_PASS_FILE")
            .unwrap();
        assert_eq!(
            pass.value.as_deref(),
            Some("/etc/postgres_exporter/password")
        );
        assert!(!env.iter().any(|e| e.name == "DATA_SOURCE_PASS"));
        // The exporter's volume never carries the database's private key.
        let volume = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "exporter-config")
            .unwrap();
        let yaml = serde_yaml::to_string(volume).unwrap();
        let password = volume
            .projected
            .as_ref()
            .unwrap()
            .sources
            .iter()
            .flatten()
            .filter_map(|source| source.secret.as_ref())
            .find(|secret| secret.name == "keycloakdb-monitoring")
            .expect("the monitoring Secret is projected");
        let item = &password.items.as_ref().unwrap()[0];
        assert_eq!(
            (item.key.as_str(), item.path.as_str()),
            ("password", "password")
        );
        assert!(
            !yaml.contains("tls.key") && !yaml.contains("hippo-tls.key"),
            "{yaml}"
        );
    }
}

#[test]
fn user_secrets_gain_pooler_keys_only_with_pgbouncer() {
    let objects = build_placeholders(&example("03"));
    let Managed::Secret(secret) = find(&objects, "Secret", "keycloakdb-pguser-keycloakdb") else {
        unreachable!()
    };
    assert_eq!(
        secret_text(secret, "pgbouncer-host").as_deref(),
        Some("keycloakdb-pgbouncer.tusk.svc")
    );
    assert_eq!(
        secret_text(secret, "pgbouncer-port").as_deref(),
        Some("5432")
    );
    let uri = secret_text(secret, "pgbouncer-uri").unwrap();
    assert!(uri.starts_with("postgresql://keycloakdb:"), "{uri}");
    assert!(
        uri.ends_with("@keycloakdb-pgbouncer.tusk.svc:5432/keycloakdb"),
        "{uri}"
    );
    let jdbc = secret_text(secret, "pgbouncer-jdbc-uri").unwrap();
    assert!(jdbc.starts_with("jdbc:postgresql://keycloakdb-pgbouncer.tusk.svc:5432/keycloakdb?"));
    assert!(jdbc.contains("prepareThreshold=0"), "{jdbc}");

    let plain = build_placeholders(&validate(BASE));
    assert!(!plain.iter().any(|o| o.kind() == "Deployment"));
    assert!(!plain.iter().any(|o| o.name() == "zebra-monitoring"));
    let Managed::Secret(secret) = find(&plain, "Secret", "zebra-pguser-zebra") else {
        unreachable!()
    };
    assert!(secret_text(secret, "pgbouncer-uri").is_none());
    for sts in statefulsets(&plain) {
        let spec = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert!(spec
            .containers
            .iter()
            .all(|c| c.name != naming::CONTAINER_EXPORTER));
    }
}

#[test]
fn custom_pooler_tls_service_exposure_and_shutdown() {
    let yaml = format!(
        "{BASE}  shutdown: true\n  proxy:\n    pgBouncer:\n      port: 6432\n      customTLSSecret: {{name: pooler.tls}}\n      service: {{type: NodePort, nodePort: 32100, metadata: {{labels: {{exposed: 'yes'}}}}}}\n"
    );
    let objects = build_placeholders(&validate(&yaml));
    let Managed::Deployment(d) = find(&objects, "Deployment", "zebra-pgbouncer") else {
        unreachable!()
    };
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(0));
    let volumes = serde_yaml::to_string(&pod(d).volumes).unwrap();
    assert!(volumes.contains("name: pooler.tls"), "{volumes}");
    assert!(volumes.contains("path: frontend/tls.key"), "{volumes}");
    // PostgreSQL's CA still comes from the cluster certificate.
    assert!(volumes.contains("path: backend/ca.crt"), "{volumes}");
    let Managed::Service(s) = find(&objects, "Service", "zebra-pgbouncer") else {
        unreachable!()
    };
    let spec = s.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, Some(32100));
    assert_eq!(spec.ports.as_ref().unwrap()[0].port, 6432);
    assert_eq!(s.metadata.labels.as_ref().unwrap()["exposed"], "yes");
    let Managed::ConfigMap(cm) = find(&objects, "ConfigMap", "zebra-pgbouncer") else {
        unreachable!()
    };
    let ini = &cm.data.as_ref().unwrap()["tusk.ini"];
    assert!(ini.contains("listen_port = 6432"), "{ini}");
    assert!(
        ini.contains("* = host=zebra-primary.tusk.svc port=5432"),
        "{ini}"
    );
}

#[test]
fn pooler_config_that_could_inject_lines_or_rewire_auth_is_refused() {
    let yaml = format!(
        "{BASE}  proxy:\n    pgBouncer:\n      config:\n        global:\n          pool_mode: \"transaction\\nadmin_users = mallory\"\n          auth_type: trust\n        databases:\n          \"app]\\n[users\": host=x\n"
    );
    let err = tusk_api::validate_yaml(&yaml).unwrap_err().to_string();
    for path in [
        "spec.proxy.pgBouncer.config.global.pool_mode: values must be a single line",
        "spec.proxy.pgBouncer.config.global.auth_type: is set by Tusk",
        "spec.proxy.pgBouncer.config.databases.app]\n[users: keys may hold only",
    ] {
        assert!(err.contains(path), "{path:?} not in {err}");
    }
}
