//! Fixture tests of the pure builders: every reference manifest in `shared/examples`, built
//! with a fixed plan, fixed images and placeholder material, must give exactly the objects in
//! `tests/fixtures/build/<manifest>.yaml` (`TUSK_UPDATE_FIXTURES=1` regenerates them; review
//! the diff before committing).

#[path = "fixtures/support.rs"]
mod support;

use support::*;

#[test]
fn every_example_builds_its_golden_objects() {
    let paths = example_paths();
    assert!(paths.len() >= 7, "found only {} examples", paths.len());
    for path in paths {
        let cluster = validate_file(&path);
        let objects = build_placeholders(&cluster);
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        assert_golden(&format!("{stem}.yaml"), &yaml_stream(&objects));
    }
}

#[test]
fn the_same_input_builds_the_same_sorted_output() {
    for path in example_paths() {
        let cluster = validate_file(&path);
        let first = build_placeholders(&cluster);
        assert_eq!(first, build_placeholders(&cluster), "{}", path.display());
        let order: Vec<(u8, &str)> = first.iter().map(|o| (o.apply_rank(), o.name())).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "{}", path.display());
    }
}

#[test]
fn every_object_is_namespaced_labelled_and_typed() {
    for path in example_paths() {
        let cluster = validate_file(&path);
        for object in build_placeholders(&cluster) {
            let meta = object.meta();
            assert_eq!(meta.namespace.as_deref(), Some("tusk"), "{}", object.name());
            assert_eq!(
                meta.labels.as_ref().unwrap()[tusk_api::naming::LABEL_CLUSTER],
                cluster.name(),
                "{} {}",
                object.kind(),
                object.name()
            );
            let json = object.to_json();
            assert_eq!(json["kind"], object.kind());
            assert!(json["apiVersion"].as_str().is_some_and(|v| !v.is_empty()));
        }
    }
}

#[test]
fn example_02_has_every_object_family_with_pgo_names() {
    let objects = build_placeholders(&example("02"));
    let names: Vec<String> = objects
        .iter()
        .map(|o| format!("{}/{}", o.kind(), o.name()))
        .collect();
    for expected in [
        "ServiceAccount/hippo-instance",
        "Role/hippo-instance",
        "RoleBinding/hippo-instance",
        "ConfigMap/hippo-config",
        "Secret/hippo-pguser-hippo",
        "Secret/hippo-pguser-rhino",
        "Secret/hippo-cluster-cert",
        "Secret/hippo-replication-cert",
        "Service/hippo-primary",
        "Service/hippo-replicas",
        "Service/hippo-ha",
        "Service/hippo-ha-config",
        "Service/hippo-pods",
        "PersistentVolumeClaim/hippo-instance1-wm5p-pgdata",
        "StatefulSet/hippo-instance1-wm5p",
        "StatefulSet/hippo-instance1-x2k7",
        "StatefulSet/hippo-instance1-q9zd",
        "PodDisruptionBudget/hippo-set-instance1",
        "ConfigMap/hippo-pgbackrest-config",
        "PersistentVolumeClaim/hippo-repo1",
        "StatefulSet/hippo-repo-host",
        "ServiceAccount/hippo-pgbackrest",
        "Role/hippo-pgbackrest",
        "RoleBinding/hippo-pgbackrest",
        "CronJob/hippo-repo1-full",
        "CronJob/hippo-repo1-diff",
    ] {
        assert!(names.contains(&expected.to_owned()), "missing {expected}");
    }
    // 3 instances x (StatefulSet + pgdata), no pgwal without walVolumeClaimSpec.
    assert_eq!(statefulsets(&objects).len(), 3);
    assert!(!names.iter().any(|n| n.ends_with("-pgwal")));
    // pgBackRest: ConfigMap, repo PVC + repo host, the Jobs' account (3), two schedules.
    assert_eq!(names.len(), 4 + 4 + 5 + 3 * 2 + 1 + 8);
}
