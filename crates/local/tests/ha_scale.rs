//! Scaling a running `tusk local` cluster by rewriting `replicas` and calling `up` (3 → 2 → 3),
//! then a parameter PostgreSQL reads only at start (`max_connections`) rolled out with the
//! primary restarted last, proven by every member's `pg_postmaster_start_time()`. Real etcd,
//! Patroni and PostgreSQL on 127.43.4.x; everything stops on drop.

#[path = "common/ha.rs"]
mod ha;

use std::collections::BTreeMap;

use ha::{manifest, Cluster, ManifestEdit};

fn edit(replicas: u32, parameters: Vec<(&'static str, &'static str)>) -> ManifestEdit {
    ManifestEdit {
        replicas: Some(replicas),
        ttl: Some(8),
        loop_wait: Some(2),
        parameters,
        ..ManifestEdit::default()
    }
}

fn names(cluster: &Cluster) -> Vec<String> {
    cluster
        .status()
        .members
        .into_iter()
        .map(|m| m.name)
        .collect()
}

#[test]
fn scale_down_and_up_then_a_restart_parameter_restarts_the_primary_last() {
    let cluster = Cluster::new("127.43.4");
    let three = cluster.write_manifest(&manifest("02-hippo-ha.yaml", &edit(3, vec![])));
    cluster.up(&three).expect("up with 3");
    cluster.create_test_table();
    let leader = cluster.leader();
    cluster
        .superuser_sql(&leader, "INSERT INTO rows VALUES (1, 'before scaling')")
        .unwrap();
    let before = cluster.status();
    assert_eq!(before.members.len(), 3);

    // 3 -> 2: one replica goes (the primary is kept), its processes and data with it.
    let two = cluster.write_manifest(&manifest("02-hippo-ha.yaml", &edit(2, vec![])));
    cluster.up(&two).expect("up with 2");
    let after = cluster.status();
    assert_eq!(after.members.len(), 2, "{after:#?}");
    assert!(after.members.iter().any(|m| m.name == leader), "{after:#?}");
    let removed: Vec<_> = before
        .members
        .iter()
        .filter(|m| after.members.iter().all(|a| a.name != m.name))
        .collect();
    assert_eq!(removed.len(), 1, "{after:#?}");
    let gone = removed[0];
    assert_ne!(gone.name, leader, "the primary must not be scaled away");
    for pid in [gone.pids.patroni, gone.pids.postgres]
        .into_iter()
        .flatten()
    {
        assert!(
            !tusk_local::system::alive(pid, ""),
            "{} still runs pid {pid}",
            gone.name
        );
    }
    assert!(!cluster.layout().member_dir(&gone.name).exists());
    cluster.assert_every_replica_streams();

    // 2 -> 3: a new member is cloned and streams, with the data.
    cluster.up(&three).expect("up with 3 again");
    let grown = cluster.status();
    assert_eq!(grown.members.len(), 3, "{grown:#?}");
    let added: Vec<String> = names(&cluster)
        .into_iter()
        .filter(|n| after.members.iter().all(|a| &a.name != n))
        .collect();
    assert_eq!(added.len(), 1, "{grown:#?}");
    assert_ne!(added[0], gone.name, "a new member gets a new name");
    cluster.assert_every_replica_streams();
    assert_eq!(
        cluster
            .superuser_sql(&added[0], "SELECT note FROM rows WHERE id = 1")
            .unwrap(),
        "before scaling"
    );

    // A restart-only parameter: replicas first, the primary last.
    let primary = cluster.leader();
    let members = names(&cluster);
    let started_before: BTreeMap<String, f64> = members
        .iter()
        .map(|m| (m.clone(), cluster.postmaster_start(m)))
        .collect();
    let restart = cluster.write_manifest(&manifest(
        "02-hippo-ha.yaml",
        &edit(3, vec![("max_connections", "120")]),
    ));
    cluster.up(&restart).expect("up with max_connections 120");
    let started_after: BTreeMap<String, f64> = members
        .iter()
        .map(|m| (m.clone(), cluster.postmaster_start(m)))
        .collect();
    for m in &members {
        assert!(
            started_after[m] > started_before[m],
            "{m} was not restarted: {started_before:?} -> {started_after:?}"
        );
        assert_eq!(
            cluster.superuser_sql(m, "SHOW max_connections").unwrap(),
            "120",
            "{m}"
        );
    }
    let last = started_after
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(m, _)| m.clone())
        .unwrap();
    assert_eq!(
        last, primary,
        "the primary must be restarted last: {started_after:?}"
    );
    cluster.assert_every_replica_streams();
}
