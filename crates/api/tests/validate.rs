//! `tusk_api::validate`: each error names its field and reason, all errors are reported at once,
//! and the defaults (set names, the default user, Patroni timings) are what downstream expects.

mod common;

use common::*;
use serde_json::{json, Value};
use tusk_api::{PostgresCluster, ValidatedCluster, ValidationErrors};

fn run(m: Value) -> Result<ValidatedCluster, ValidationErrors> {
    let cluster: PostgresCluster = serde_json::from_value(m).expect("manifest parses");
    tusk_api::validate(&cluster)
}

fn edit(mut m: Value, f: impl FnOnce(&mut Value)) -> Value {
    f(&mut m);
    m
}

/// The one error of `m`, as `path: reason`.
fn error(m: Value) -> String {
    let errors = run(m).expect_err("the manifest is invalid");
    assert_eq!(errors.0.len(), 1, "expected one error, got {errors}");
    errors.0[0].to_string()
}

#[test]
fn error_paths_and_reasons() {
    let set = minimal()["spec"]["instances"][0].clone();
    let cases: Vec<(Value, &str)> = vec![
        (edit(minimal(), |m| m["spec"]["instances"] = json!([set.clone(), set.clone()])),
            r#"spec.instances[1].name: duplicate "instance1" (also spec.instances[0])"#),
        (edit(minimal(), |m| m["spec"]["instances"] = json!([{"dataVolumeClaimSpec": volume()}, {"name": "00", "dataVolumeClaimSpec": volume()}])),
            r#"spec.instances[1].name: duplicate "00" (also spec.instances[0])"#),
        (edit(minimal(), |m| m["spec"]["postgresVersion"] = json!(12)),
            "spec.postgresVersion: 12 is not supported (supported: 13 to 17)"),
        (edit(minimal(), |m| m["metadata"]["name"] = json!("1hippo")),
            "metadata.name: must start with a letter (it names Services)"),
        (edit(minimal(), |m| m["spec"]["instances"][0]["replicas"] = json!(0)),
            "spec.instances[0].replicas: 0 must be at least 1"),
        (edit(minimal(), |m| m["spec"]["instances"][0]["dataVolumeClaimSpec"] = json!({"accessModes": ["ReadWriteOnce"]})),
            "spec.instances[0].dataVolumeClaimSpec.resources.requests.storage: a storage request is required"),
        (edit(minimal(), |m| m["spec"]["instances"][0]["containers"] = json!([{"name": "database"}])),
            r#"spec.instances[0].containers[0].name: "database" is a container name Tusk uses"#),
        (edit(minimal(), |m| m["spec"]["users"] = json!([{"name": "rhino"}, {"name": "rhino"}])),
            r#"spec.users[1].name: duplicate "rhino""#),
        (edit(minimal(), |m| m["spec"]["users"] = json!([{"name": "rhino", "options": "SUPERUSER IN ROLE admin"}])),
            r#"spec.users[0].options: "IN" is not a role attribute"#),
        (edit(minimal(), |m| m["spec"]["users"] = json!([{"name": "rhino", "databases": ["template1"]}])),
            r#"spec.users[0].databases[0]: "template1" is reserved"#),
        (edit(minimal(), |m| m["spec"]["metadata"] = json!({"labels": {"tusk.rs/cluster": "x"}})),
            "spec.metadata.labels[tusk.rs/cluster]: the tusk.rs/ prefix is reserved for Tusk"),
        (edit(minimal(), |m| m["spec"]["patroni"] = json!({"dynamicConfiguration": {"postgresql": {"parameters": {"archive_command": "true"}}}})),
            "spec.patroni.dynamicConfiguration.postgresql.parameters.archive_command: is managed by Tusk"),
        (edit(minimal(), |m| m["spec"]["patroni"] = json!({"dynamicConfiguration": {"ttl": 30}})),
            "spec.patroni.dynamicConfiguration.ttl: set through leaderLeaseDurationSeconds"),
        (edit(minimal(), |m| m["spec"]["patroni"] = json!({"port": 5432})),
            "spec.patroni.port: 5432 is also spec.port"),
        (edit(minimal(), |m| m["spec"]["patroni"] = json!({"leaderLeaseDurationSeconds": 10, "syncPeriodSeconds": 9})),
            "spec.patroni.syncPeriodSeconds: 9 leaves no room for retries"),
        (edit(minimal(), |m| m["spec"]["patroni"] = json!({"switchover": {"enabled": true, "type": "Failover"}})),
            "spec.patroni.switchover.targetInstance: required when type is Failover"),
        (edit(with_repo1(), |m| m["spec"]["backups"]["pgbackrest"]["repos"][0]["name"] = json!("repo5")),
            r#"spec.backups.pgbackrest.repos[0].name: "repo5" must be repo1..repo4"#),
        (edit(with_repo1(), |m| m["spec"]["backups"]["pgbackrest"]["repos"][0]["schedules"] = json!({"full": "0 24 * * *"})),
            r#"spec.backups.pgbackrest.repos[0].schedules.full: hour "24": 24 is outside 0..23"#),
        (edit(with_repo1(), |m| m["spec"]["backups"]["pgbackrest"]["global"] = json!({"repo2-path": "/x"})),
            "spec.backups.pgbackrest.global.repo2-path: repo2 is not in spec.backups.pgbackrest.repos"),
        (edit(with_repo1(), |m| m["spec"]["backups"]["pgbackrest"]["restore"] = json!({"enabled": true, "repoName": "repo1", "options": ["--target-action=promote"]})),
            "spec.backups.pgbackrest.restore.options[0]: --target-action is managed by Tusk"),
        (edit(minimal(), |m| m["spec"]["dataSource"] = json!({"postgresCluster": {"clusterName": "a", "repoName": "repo1", "options": ["--stanza=x"]}})),
            "spec.dataSource.postgresCluster.options[0]: --stanza is managed by Tusk"),
        (edit(minimal(), |m| m["spec"]["customTLSSecret"] = json!({"name": "c", "items": [{"key": "a", "path": "tls.crt"}, {"key": "b", "path": "tls.key"}]}))
            .pipe(|mut m| { m["spec"]["customReplicationTLSSecret"] = json!({"name": "r"}); m }),
            "spec.customTLSSecret.items: no item maps to \"ca.crt\""),
        (edit(minimal(), |m| m["spec"]["service"] = json!({"nodePort": 32000})),
            "spec.service.nodePort: allowed only with type NodePort or LoadBalancer"),
        (edit(minimal(), |m| m["spec"]["proxy"] = json!({"pgBouncer": {"replicas": -1}})),
            "spec.proxy.pgBouncer.replicas: -1 must not be negative"),
        (edit(minimal(), |m| m["spec"]["databaseInitSQL"] = json!({"name": "", "key": "init.sql"})),
            "spec.databaseInitSQL.name: must not be empty"),
    ];
    for (manifest, expected) in cases {
        let got = error(manifest);
        assert!(
            got.starts_with(expected),
            "expected {expected:?}, got {got:?}"
        );
    }
}

trait Pipe: Sized {
    fn pipe(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }
}
impl Pipe for Value {}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let m = edit(minimal(), |m| {
        m["spec"]["postgresVersion"] = json!(99);
        m["spec"]["instances"][0]["replicas"] = json!(0);
        m["spec"]["users"] = json!([{"name": "rhino", "options": "PASSWORD 'x'"}]);
    });
    let errors = run(m).unwrap_err();
    assert_eq!(
        errors.paths(),
        [
            "spec.postgresVersion",
            "spec.instances[0].replicas",
            "spec.users[0].options"
        ]
    );
}

#[test]
fn unnamed_instance_sets_are_named_by_position() {
    let m = edit(minimal(), |m| {
        m["spec"]["instances"] = json!([{"dataVolumeClaimSpec": volume()}, {"dataVolumeClaimSpec": volume(), "replicas": 2}]);
    });
    let c = run(m).unwrap();
    let names: Vec<&str> = c.instance_sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["00", "01"]);
    assert_eq!(c.instance_sets[0].replicas, 1);
    // A single instance gets no PodDisruptionBudget (nodes must stay drainable); more get one.
    assert_eq!(c.instance_sets[0].min_available, None);
    assert!(c.instance_sets[1].min_available.is_some());
    assert_eq!(c.desired_instances(), 3);
}

#[test]
fn without_users_there_is_one_named_after_the_cluster() {
    let c = run(minimal()).unwrap();
    assert_eq!(c.users.len(), 1);
    assert_eq!(c.users[0].name.as_str(), "hippo");
    assert_eq!(c.users[0].databases, ["hippo"]);
    // An empty list means the same.
    let c = run(edit(minimal(), |m| m["spec"]["users"] = json!([]))).unwrap();
    assert_eq!(c.users[0].name.as_str(), "hippo");
    // Declared users replace the default one; options are normalised, databases deduplicated.
    let c = run(edit(minimal(), |m| {
        m["spec"]["users"] = json!([{"name": "rhino", "databases": ["zoo", "zoo"], "options": "  CREATEDB   CONNECTION LIMIT 5 "}]);
    }))
    .unwrap();
    assert_eq!(c.users.len(), 1);
    assert_eq!(c.users[0].databases, ["zoo"]);
    assert_eq!(c.users[0].options, "CREATEDB CONNECTION LIMIT 5");
}

#[test]
fn patroni_timings_keep_loop_wait_plus_two_retries_within_ttl() {
    let timings = |p: Value| {
        let c = run(edit(minimal(), |m| m["spec"]["patroni"] = p)).unwrap();
        let p = c.patroni;
        (
            p.leader_lease_seconds,
            p.sync_period_seconds,
            p.retry_timeout_seconds,
        )
    };
    // Patroni decides about a lost DCS 3 s before the lease runs out, ahead of the fencer.
    assert_eq!(timings(json!({})), (15, 5, 3));
    assert_eq!(
        timings(json!({"leaderLeaseDurationSeconds": 30, "syncPeriodSeconds": 10})),
        (30, 10, 8)
    );
    // A short lease pulls the default loop_wait down with it.
    assert_eq!(timings(json!({"leaderLeaseDurationSeconds": 4})), (4, 2, 1));
    for lease in 3..=60 {
        for sync in 1..=lease - 2 {
            let (ttl, loop_wait, retry) =
                timings(json!({"leaderLeaseDurationSeconds": lease, "syncPeriodSeconds": sync}));
            assert!(
                loop_wait + 2 * retry <= ttl && retry >= 1,
                "{lease}/{sync}: {retry}"
            );
        }
    }
}

#[test]
fn reference_manifests_validate_with_their_declared_settings() {
    for (file, manifest) in examples() {
        let c = run(manifest.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            c.name(),
            manifest["metadata"]["name"].as_str().unwrap(),
            "{file}"
        );
        assert_eq!(
            c.instance_sets.len(),
            manifest["spec"]["instances"].as_array().unwrap().len()
        );
        assert_eq!(
            c.backups.is_some(),
            manifest["spec"].get("backups").is_some(),
            "{file}"
        );
    }
}

#[test]
fn a_data_source_carries_where_its_restore_job_runs() {
    for kind in ["postgresCluster", "pgbackrest"] {
        let m = edit(minimal(), |m| {
            let mut source = if kind == "postgresCluster" {
                json!({"clusterName": "hippo", "repoName": "repo1"})
            } else {
                json!({"stanza": "db", "repo": {"name": "repo1", "s3": {"bucket": "b", "endpoint": "e", "region": "r"}}})
            };
            source["resources"] = json!({"limits": {"cpu": "2"}});
            source["tolerations"] = json!([{"key": "restore", "operator": "Exists"}]);
            source["priorityClassName"] = json!("restores");
            m["spec"]["dataSource"] = json!({ kind: source });
        });
        let c = run(m).unwrap();
        let job = c.data_source.as_ref().unwrap().job();
        let cpu = &job.resources.as_ref().unwrap().limits.as_ref().unwrap()["cpu"];
        assert_eq!(cpu.0, "2", "{kind}");
        assert_eq!(job.tolerations[0].key.as_deref(), Some("restore"), "{kind}");
        assert_eq!(
            job.priority_class_name.as_deref(),
            Some("restores"),
            "{kind}"
        );
        assert_eq!(job.affinity, None, "{kind}");
    }
}
