//! Fixture tests of the one-shot Jobs the controller creates (they are not part of `build`):
//! the manual backup and stanza-create Jobs of example 02, the clone restore Job and its
//! ConfigMap of example 05 (cloning example 02's `hippo`), and the in-place restore Job of
//! example 07. `tests/fixtures/build/jobs/<example>.yaml` hold them (`TUSK_UPDATE_FIXTURES=1`
//! regenerates); the CLI's schema test validates the same files with kubernetes-validate.

#[path = "fixtures/support.rs"]
mod support;

use serde::Serialize;
use support::*;
use tusk_operator::build::backup_jobs::{manual_backup_job, stanza_create_job};
use tusk_operator::controller::restore::{
    clone_objects, clone_source_from_cluster, restore_job_for, RestorePhase,
};

const IMAGE: &str = "registry.example/tusk/postgres:15.8-0";

fn stream(docs: &[serde_json::Value]) -> String {
    docs.iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect()
}

fn typed<K: Serialize + kube::Resource<DynamicType = ()>>(object: &K) -> serde_json::Value {
    let mut json = serde_json::to_value(object).unwrap();
    json["apiVersion"] = K::api_version(&()).into();
    json["kind"] = K::kind(&()).into();
    json
}

fn first_instance(cluster: &tusk_api::ValidatedCluster) -> String {
    fixed_plan(cluster).instances().next().unwrap().1.to_owned()
}

#[test]
fn manual_backup_and_stanza_jobs_of_example_02() {
    let hippo = example("02");
    let manual = manual_backup_job(&hippo, IMAGE, "2024-05-01").expect("02 has manual");
    let stanza = stanza_create_job(&hippo, IMAGE).expect("02 has backups");
    assert_golden(
        "jobs/02-hippo-ha.yaml",
        &stream(&[typed(&manual), typed(&stanza)]),
    );
}

#[test]
fn clone_restore_of_example_05_reads_example_02s_repo_host() {
    let hippo = example("02");
    let elephant = example("05");
    let options = ["--type=time".to_owned()];
    let source = clone_source_from_cluster(&hippo, "repo1", &options).unwrap();
    assert!(source
        .conf_text
        .contains("repo1-host=hippo-repo-host-0.hippo-pods.tusk.svc"));
    assert!(clone_source_from_cluster(&hippo, "repo4", &options)
        .unwrap_err()
        .contains("repo4"));
    let phase = RestorePhase::Clone {
        instance: first_instance(&elephant),
    };
    let job = restore_job_for(&elephant, &phase, Some(&source), IMAGE).unwrap();
    let mut docs: Vec<serde_json::Value> = clone_objects(&elephant, Some(&source))
        .iter()
        .map(|o| o.to_json())
        .collect();
    docs.push(typed(&job));
    assert_golden("jobs/05-elephant-clone-pitr.yaml", &stream(&docs));
}

#[test]
fn in_place_restore_of_example_07_is_a_delta_restore_of_its_own_repo() {
    let day2 = example("07");
    let phase = RestorePhase::InPlace {
        id: "id1".into(),
        instance: first_instance(&day2),
    };
    let job = restore_job_for(&day2, &phase, None, IMAGE).unwrap();
    let json = typed(&job);
    let command = json["spec"]["template"]["spec"]["containers"][0]["command"].clone();
    let words: Vec<&str> = command
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(words.contains(&"--delta") && words.contains(&"--db-include=hippo"));
    assert_golden("jobs/07-hippo-day2.yaml", &stream(&[json]));
}

#[test]
fn a_clone_job_runs_as_the_data_source_says_and_falls_back_to_the_set() {
    use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
    use tusk_api::model::DataSourceSettings;
    let hippo = example("02");
    let mut elephant: tusk_api::ValidatedCluster = example("05");
    let source = clone_source_from_cluster(&hippo, "repo1", &[]).unwrap();
    let phase = RestorePhase::Clone {
        instance: first_instance(&elephant),
    };
    let affinity: Affinity = serde_json::from_value(serde_json::json!({"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}}))
    .unwrap();
    elephant.instance_sets[0].affinity = Some(affinity.clone());
    elephant.instance_sets[0].priority_class_name = Some("databases".into());
    let pod_of = |cluster: &tusk_api::ValidatedCluster| {
        restore_job_for(cluster, &phase, Some(&source), IMAGE)
            .unwrap()
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
    };

    // Nothing in the data source: the set's placement.
    let pod = pod_of(&elephant);
    assert_eq!(pod.affinity, Some(affinity.clone()));
    assert_eq!(pod.priority_class_name.as_deref(), Some("databases"));
    assert_eq!(pod.tolerations, None);

    // The data source's fields win where given; the rest still comes from the set.
    let resources: ResourceRequirements =
        serde_json::from_value(serde_json::json!({"limits": {"cpu": "2", "memory": "4Gi"}}))
            .unwrap();
    let toleration = Toleration {
        key: Some("restore".into()),
        operator: Some("Exists".into()),
        ..Toleration::default()
    };
    let Some(DataSourceSettings::PostgresCluster { job, .. }) = &mut elephant.data_source else {
        panic!("example 05 clones a PostgresCluster");
    };
    job.resources = Some(resources.clone());
    job.tolerations = vec![toleration.clone()];
    job.priority_class_name = Some("restores".into());
    let pod = pod_of(&elephant);
    assert_eq!(pod.containers[0].resources, Some(resources));
    assert_eq!(pod.tolerations, Some(vec![toleration]));
    assert_eq!(pod.priority_class_name.as_deref(), Some("restores"));
    assert_eq!(pod.affinity, Some(affinity));
}
