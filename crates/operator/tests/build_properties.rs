//! Targeted assertions on the built objects, each about one promise users or the rest of
//! Tusk rely on: restricted pods, which Service gets a nodePort, when PDBs exist, shutdown,
//! owner references, custom TLS, label propagation.

#[path = "fixtures/support.rs"]
mod support;

use k8s_openapi::api::core::v1::PodSpec;
use tusk_api::naming;
use tusk_operator::build::Managed;

use support::*;

fn pod_spec(sts: &k8s_openapi::api::apps::v1::StatefulSet) -> &PodSpec {
    sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

const WITH_SIDECAR: &str = r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {name: zebra, namespace: tusk}
spec:
  postgresVersion: 15
  metadata:
    labels: {team: payments}
    annotations: {owner: alice}
  instances:
    - name: fast
      replicas: 2
      metadata:
        labels: {tier: gold}
      dataVolumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
      containers:
        - name: log-shipper
          image: registry.example/shipper:1
    - name: slow
      dataVolumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#;

#[test]
fn every_container_runs_restricted() {
    let mut clusters: Vec<_> = example_paths().iter().map(|p| validate_file(p)).collect();
    clusters.push(validate(WITH_SIDECAR));
    let mut containers_seen = 0;
    for cluster in clusters {
        let objects = build_placeholders(&cluster);
        for sts in statefulsets(&objects) {
            let pod = pod_spec(sts);
            let psc = pod.security_context.as_ref().unwrap();
            assert_eq!(psc.run_as_non_root, Some(true));
            assert_eq!(psc.run_as_user, Some(26));
            assert_eq!(psc.fs_group, Some(26));
            assert_eq!(
                psc.fs_group_change_policy.as_deref(),
                Some("OnRootMismatch")
            );
            assert_eq!(
                psc.seccomp_profile.as_ref().unwrap().type_,
                "RuntimeDefault"
            );
            assert_eq!(pod.enable_service_links, Some(false));
            for c in &pod.containers {
                let sc = c
                    .security_context
                    .as_ref()
                    .unwrap_or_else(|| panic!("{}", c.name));
                assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
                assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
                let caps = sc.capabilities.as_ref().unwrap();
                assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
                assert!(caps.add.is_none());
                assert_ne!(sc.privileged, Some(true));
                containers_seen += 1;
            }
        }
    }
    // The sidecar was among them (2 instances of set `fast` have 2 containers each).
    assert!(containers_seen > 10);
}

#[test]
fn sidecars_follow_the_database_container() {
    let objects = build_placeholders(&validate(WITH_SIDECAR));
    let fast = find(&objects, "StatefulSet", "zebra-fast-wm5p");
    let Managed::StatefulSet(fast) = fast else {
        unreachable!()
    };
    let names: Vec<&str> = pod_spec(fast)
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    // Tusk's own sidecars first (the fencer and the certificate reloader on every instance),
    // the user's last.
    assert_eq!(names, ["database", "fencer", "tls-reload", "log-shipper"]);
    let Managed::StatefulSet(slow) = find(&objects, "StatefulSet", "zebra-slow-wm5p") else {
        unreachable!()
    };
    assert_eq!(pod_spec(slow).containers.len(), 3);
    // The reloader signals Patroni and the fencer kills PostgreSQL across containers: one
    // process namespace per pod.
    assert_eq!(pod_spec(slow).share_process_namespace, Some(true));
}

#[test]
fn only_the_primary_service_of_example_03_has_a_node_port() {
    let objects = build_placeholders(&example("03"));
    let mut with_node_port = Vec::new();
    for o in &objects {
        if let Managed::Service(s) = o {
            let spec = s.spec.as_ref().unwrap();
            if spec.ports.iter().flatten().any(|p| p.node_port.is_some()) {
                with_node_port.push(o.name().to_owned());
                assert_eq!(spec.type_.as_deref(), Some("NodePort"));
                assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, Some(32000));
            }
        }
    }
    assert_eq!(with_node_port, ["keycloakdb-primary"]);
    let Managed::Service(replicas) = find(&objects, "Service", "keycloakdb-replicas") else {
        unreachable!()
    };
    assert_eq!(
        replicas.spec.as_ref().unwrap().type_.as_deref(),
        Some("ClusterIP")
    );
}

#[test]
fn services_select_what_patroni_labels() {
    let objects = build_placeholders(&example("01"));
    let selector = |name: &str| {
        let Managed::Service(s) = find(&objects, "Service", name) else {
            unreachable!()
        };
        s.spec.as_ref().unwrap().selector.clone()
    };
    let primary = selector("hippo-primary").unwrap();
    assert_eq!(primary[naming::LABEL_ROLE], naming::ROLE_MASTER);
    assert_eq!(primary[naming::LABEL_CLUSTER], "hippo");
    assert_eq!(
        selector("hippo-replicas").unwrap()[naming::LABEL_ROLE],
        naming::ROLE_REPLICA
    );
    // Patroni writes these Endpoints; a selector would make Kubernetes overwrite them.
    assert!(selector("hippo-ha").is_none());
    assert!(selector("hippo-ha-config").is_none());
    let Managed::Service(pods) = find(&objects, "Service", "hippo-pods") else {
        unreachable!()
    };
    let spec = pods.spec.as_ref().unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    // Every pod of the cluster (instances and the pgBackRest repo host) gets a stable name.
    assert_eq!(
        spec.selector.as_ref().unwrap(),
        &std::collections::BTreeMap::from([(naming::LABEL_CLUSTER.to_owned(), "hippo".to_owned())])
    );
}

#[test]
fn a_pdb_exists_only_for_sets_with_more_than_one_replica() {
    let mut checked = 0;
    for path in example_paths() {
        let cluster = validate_file(&path);
        let objects = build_placeholders(&cluster);
        for set in &cluster.instance_sets {
            let name = cluster.names.instance_set_pdb(set.name.as_str());
            let pdb = objects
                .iter()
                .find(|o| o.kind() == "PodDisruptionBudget" && o.name() == name);
            assert_eq!(pdb.is_some(), set.replicas > 1, "{} {name}", path.display());
            if let Some(Managed::PodDisruptionBudget(pdb)) = pdb {
                let selector = pdb.spec.as_ref().unwrap().selector.as_ref().unwrap();
                let labels = selector.match_labels.as_ref().unwrap();
                assert_eq!(labels[naming::LABEL_INSTANCE_SET], set.name.as_str());
            }
            checked += 1;
        }
    }
    assert!(checked >= 8);
}

#[test]
fn shutdown_scales_instances_to_zero_and_keeps_their_volumes() {
    let mut cluster = example("02");
    let running = build_placeholders(&cluster);
    cluster.shutdown = true;
    let stopped = build_placeholders(&cluster);
    for objects in [&running, &stopped] {
        assert_eq!(statefulsets(objects).len(), 3);
    }
    let replicas = |objects: &[Managed]| -> Vec<i32> {
        statefulsets(objects)
            .iter()
            .map(|s| s.spec.as_ref().unwrap().replicas.unwrap())
            .collect()
    };
    assert_eq!(replicas(&running), [1, 1, 1]);
    assert_eq!(replicas(&stopped), [0, 0, 0]);
    let pvcs = |objects: &[Managed]| {
        objects
            .iter()
            .filter(|o| o.kind() == "PersistentVolumeClaim")
            .count()
    };
    // Three pgdata claims and the repo1 volume of the repo host.
    assert_eq!(pvcs(&stopped), 3 + 1);
    assert_eq!(pvcs(&running), pvcs(&stopped));
}

#[test]
fn owner_references_are_present_exactly_when_the_cluster_has_a_uid() {
    let mut cluster = example("03");
    for object in build_placeholders(&cluster) {
        assert!(
            object.meta().owner_references.is_none(),
            "{}",
            object.name()
        );
    }
    cluster.uid = Some("0f1e2d3c-aaaa-bbbb-cccc-123456789abc".to_owned());
    let objects = build_placeholders(&cluster);
    assert!(!objects.is_empty());
    for object in &objects {
        let refs = object.meta().owner_references.as_ref().unwrap();
        assert_eq!(refs.len(), 1, "{}", object.name());
        let owner = &refs[0];
        assert_eq!(owner.api_version, "tusk.rs/v1beta1");
        assert_eq!(owner.kind, "PostgresCluster");
        assert_eq!(owner.name, "keycloakdb");
        assert_eq!(owner.uid, "0f1e2d3c-aaaa-bbbb-cccc-123456789abc");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
    }
}

#[test]
fn custom_tls_projections_are_used_with_their_items() {
    let objects = build_placeholders(&example("03"));
    // Tusk issues nothing when the user brings certificates; it publishes the client-CA bundle.
    assert!(!objects.iter().any(|o| o.name().ends_with("-cert")));
    assert!(objects
        .iter()
        .any(|o| o.kind() == "ConfigMap" && o.name() == "keycloakdb-client-ca"));
    for sts in statefulsets(&objects) {
        let volume = pod_spec(sts)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "tls")
            .unwrap();
        let projected = volume.projected.as_ref().unwrap();
        assert_eq!(projected.default_mode, Some(0o640));
        let sources = projected.sources.as_ref().unwrap();
        let secrets: Vec<_> = sources.iter().filter_map(|s| s.secret.as_ref()).collect();
        assert_eq!(secrets[0].name, "hippo.tls");
        let server: Vec<(&str, &str)> = secrets[0]
            .items
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| (i.key.as_str(), i.path.as_str()))
            .collect();
        assert_eq!(
            server,
            [("hippo-tls.crt", "tls.crt"), ("hippo-tls.key", "tls.key")]
        );
        // The client-CA file is the Tusk-owned bundle (user CA + operator root), so the
        // operator's client certificate passes; the user's `ca.crt` is not projected here.
        let client_ca = sources[1].config_map.as_ref().unwrap();
        assert_eq!(client_ca.name, "keycloakdb-client-ca");
        let items = client_ca.items.as_ref().unwrap();
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            ("ca.crt", "ca.crt")
        );
        // The replication Secret has no items: its standard keys land in the sub-directory.
        assert_eq!(secrets[1].name, "hippo-replication.tls");
        let replication: Vec<&str> = secrets[1]
            .items
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| i.path.as_str())
            .collect();
        assert_eq!(
            replication,
            [
                "replication/tls.crt",
                "replication/tls.key",
                "replication/ca.crt"
            ]
        );
    }
}

#[test]
fn tusk_issued_certificates_are_mounted_when_there_is_no_custom_tls() {
    let objects = build_placeholders(&example("01"));
    for name in ["hippo-cluster-cert", "hippo-replication-cert"] {
        let Managed::Secret(secret) = find(&objects, "Secret", name) else {
            unreachable!()
        };
        let keys: Vec<&str> = secret
            .data
            .as_ref()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    }
    let sts = statefulsets(&objects)[0];
    let volume = pod_spec(sts)
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "tls")
        .unwrap();
    let names: Vec<&str> = volume
        .projected
        .as_ref()
        .unwrap()
        .sources
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| s.secret.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(names, ["hippo-cluster-cert", "hippo-replication-cert"]);
}

#[test]
fn labels_flow_from_spec_metadata_and_instance_metadata() {
    let cluster = validate(WITH_SIDECAR);
    let objects = build_placeholders(&cluster);
    for object in &objects {
        let labels = object.meta().labels.as_ref().unwrap();
        assert_eq!(
            labels.get("team").map(String::as_str),
            Some("payments"),
            "{}",
            object.name()
        );
        assert_eq!(
            object
                .meta()
                .annotations
                .as_ref()
                .unwrap()
                .get("owner")
                .map(String::as_str),
            Some("alice"),
            "{}",
            object.name()
        );
        // The set's labels are on the set's objects only.
        let of_fast = object.name().starts_with("zebra-fast-") || object.name() == "zebra-set-fast";
        assert_eq!(
            labels.contains_key("tier"),
            of_fast,
            "{} {}",
            object.kind(),
            object.name()
        );
    }
    let Managed::StatefulSet(sts) = find(&objects, "StatefulSet", "zebra-fast-x2k7") else {
        unreachable!()
    };
    let template = sts
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap();
    let pod_labels = template.labels.as_ref().unwrap();
    assert_eq!(pod_labels["tier"], "gold");
    assert_eq!(pod_labels["team"], "payments");
    assert_eq!(pod_labels[naming::LABEL_INSTANCE], "zebra-fast-x2k7");
    assert_eq!(template.annotations.as_ref().unwrap()["owner"], "alice");
    // Example 03's Service metadata lands on the primary Service only.
    let objects = build_placeholders(&example("03"));
    for o in &objects {
        let has = o.meta().labels.as_ref().unwrap().get("my-label").is_some();
        assert_eq!(has, o.name() == "keycloakdb-primary", "{}", o.name());
    }
}

#[test]
fn tusk_labels_win_over_user_labels() {
    // `tusk.rs/` labels are rejected by validation; `app.kubernetes.io/*` are not, yet Tusk
    // sets some of them and orphan cleanup and dashboards rely on them.
    let yaml = WITH_SIDECAR.replace(
        "{team: payments}",
        "{team: payments, app.kubernetes.io/managed-by: helm}",
    );
    let objects = build_placeholders(&validate(&yaml));
    for o in &objects {
        let labels = o.meta().labels.as_ref().unwrap();
        assert_eq!(labels[naming::APP_MANAGED_BY], "tusk", "{}", o.name());
        assert_eq!(labels["team"], "payments");
    }
}

#[test]
fn pod_templates_name_the_default_container_and_carry_the_config_hash() {
    let objects = build_placeholders(&example("07"));
    let Managed::ConfigMap(config) = find(&objects, "ConfigMap", "hippo-config") else {
        unreachable!()
    };
    let patroni_yaml = &config.data.as_ref().unwrap()["patroni.yaml"];
    let expected_hash = tusk_operator::build::patroni_config::config_hash(patroni_yaml);
    let sets = statefulsets(&objects);
    assert_eq!(sets.len(), 4);
    for sts in sets {
        let annotations = sts
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap();
        let annotations = annotations.annotations.as_ref().unwrap();
        assert_eq!(
            annotations[naming::ANNOTATION_DEFAULT_CONTAINER],
            "database"
        );
        assert_eq!(annotations[naming::ANNOTATION_CONFIG_HASH], expected_hash);
        // Example 07 restarts by annotation: it must reach the pod template.
        assert_eq!(annotations["restarted"], "2026-11-21T10:00:00Z");
        assert_eq!(pod_spec(sts).containers[0].name, "database");
    }
}

#[test]
fn instances_are_one_pod_statefulsets_restarted_by_the_operator() {
    let cluster = example("03");
    let objects = build_placeholders(&cluster);
    for sts in statefulsets(&objects) {
        let name = sts.metadata.name.as_deref().unwrap();
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(
            spec.update_strategy.as_ref().unwrap().type_.as_deref(),
            Some("OnDelete")
        );
        assert_eq!(spec.service_name.as_deref(), Some("keycloakdb-pods"));
        assert!(spec.volume_claim_templates.is_none());
        let selector = spec.selector.match_labels.as_ref().unwrap();
        assert_eq!(selector[naming::LABEL_INSTANCE], name);
        let pod = pod_spec(sts);
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("keycloakdb-instance")
        );
        let claims: Vec<&str> = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .filter_map(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .map(|c| c.claim_name.as_str())
            })
            .collect();
        assert_eq!(claims, [format!("{name}-pgdata"), format!("{name}-pgwal")]);
        for claim in &claims {
            find(&objects, "PersistentVolumeClaim", claim);
        }
        let db = &pod.containers[0];
        assert_eq!(
            db.image.as_deref(),
            Some("registry.example/tusk/postgres:15.8-0")
        );
        assert_eq!(
            db.command.as_ref().unwrap(),
            &["patroni", "/etc/patroni/patroni.yaml"]
        );
        let env = db.env.as_ref().unwrap();
        let var = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        assert_eq!(
            var("PATRONI_NAME")
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.name"
        );
        assert_eq!(
            var("PATRONI_POSTGRESQL_CONNECT_ADDRESS").value.as_deref(),
            Some(format!("{name}-0.keycloakdb-pods.tusk.svc:5432").as_str())
        );
        let probe = db
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.scheme.as_deref(), Some("HTTPS"));
        assert_eq!(probe.path.as_deref(), Some("/liveness"));
    }
}

#[test]
fn pod_scheduling_and_image_settings_pass_through() {
    let cluster = validate(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {name: hippo, namespace: tusk}
spec:
  postgresVersion: 15
  image: registry.example/custom/postgres:15-patched
  imagePullPolicy: Always
  imagePullSecrets: [{name: registry-creds}]
  instances:
    - name: a
      priorityClassName: db-high
      tolerations: [{key: dedicated, operator: Equal, value: db, effect: NoSchedule}]
      resources: {requests: {cpu: 500m}}
      dataVolumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#,
    );
    let objects = build_placeholders(&cluster);
    let sts = statefulsets(&objects)[0];
    let pod = pod_spec(sts);
    assert_eq!(pod.priority_class_name.as_deref(), Some("db-high"));
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    assert_eq!(
        pod.image_pull_secrets.as_ref().unwrap()[0].name,
        "registry-creds"
    );
    let db = &pod.containers[0];
    // spec.image overrides the operator's RELATED_IMAGE_POSTGRES_15.
    assert_eq!(
        db.image.as_deref(),
        Some("registry.example/custom/postgres:15-patched")
    );
    assert_eq!(db.image_pull_policy.as_deref(), Some("Always"));
    let requests = db.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert_eq!(requests["cpu"].0, "500m");
    // Without those settings nothing is invented.
    let plain = build_placeholders(&example("01"));
    let pod = pod_spec(statefulsets(&plain)[0]);
    assert!(pod.tolerations.is_none() && pod.image_pull_secrets.is_none());
    assert!(pod.containers[0].image_pull_policy.is_none());
}
