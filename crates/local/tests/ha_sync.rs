//! `synchronous_mode: true` (as in examples/02-hippo-ha.yaml) loses no acknowledged commit
//! across repeated crashes of the primary: a writer inserts rows through a multi-host
//! connection (`target_session_attrs=read-write`, verified TLS) and records every commit it
//! saw acknowledged; the current primary is SIGKILLed (Patroni, postmaster and children),
//! a new one is elected, `up` brings the crashed member back, five times over; then every
//! acknowledged row must be on the final primary. Real etcd, Patroni and PostgreSQL on
//! 127.43.3.x; everything stops on drop.

#[path = "common/ha.rs"]
mod ha;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ha::{manifest, Cluster, ManifestEdit, Writer};

const FAILOVERS: usize = 5;
/// Commits the writer must see acknowledged between a crash and the crashed member's
/// return: writes really continued on the new primary while the cluster was degraded.
const MIN_ACKS_WHILE_DEGRADED: usize = 10;

#[test]
fn synchronous_mode_loses_no_acknowledged_commit_across_five_crashes_of_the_primary() {
    let cluster = Cluster::new("127.43.3");
    let edit = ManifestEdit {
        ttl: Some(8),
        loop_wait: Some(2),
        ..ManifestEdit::default()
    };
    let text = manifest("02-hippo-ha.yaml", &edit);
    assert!(
        text.contains("synchronous_mode: true"),
        "the example must keep synchronous mode on: {text}"
    );
    let file = cluster.write_manifest(&text);
    cluster.up(&file).expect("up");
    cluster.create_test_table();

    let writer = Writer::start(&cluster, Duration::from_millis(5));
    let first = writer.wait_acks_since(Instant::now(), 20, ha::WAIT_LIMIT);
    assert!(first >= 20, "the writer commits before any crash ({first})");

    let mut leaders = Vec::new();
    for round in 1..=FAILOVERS {
        let old = cluster.leader();
        let crashed_at = Instant::now();
        cluster.crash_member(&old);
        let new = cluster.wait_new_leader(&old);
        // Rows acknowledged from now on were committed by the new primary.
        let degraded = writer.wait_acks_since(crashed_at, MIN_ACKS_WHILE_DEGRADED, ha::WAIT_LIMIT);
        cluster
            .up(&file)
            .expect("up brings the crashed member back");
        cluster.assert_every_replica_streams();
        eprintln!(
            "round {round}: {old} crashed, {new} leads, {degraded} commits acknowledged before \
             {old} rejoined, {} in total",
            writer.acks().len()
        );
        assert!(
            degraded >= MIN_ACKS_WHILE_DEGRADED,
            "round {round}: only {degraded} commits acknowledged by the new primary {new}"
        );
        leaders.push(new);
    }
    // Keep writing a little on the final shape, then stop the writer.
    let settled = Instant::now();
    writer.wait_acks_since(settled, 10, ha::WAIT_LIMIT);
    let acks = writer.stop();

    let primary = cluster.leader();
    let stored: BTreeSet<i64> = cluster
        .superuser_sql(&primary, "SELECT id FROM rows")
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let lost: Vec<i64> = acks
        .iter()
        .map(|a| a.id)
        .filter(|id| !stored.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged commits are missing on {primary}: {:?}",
        lost.len(),
        acks.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(acks.len() > FAILOVERS * MIN_ACKS_WHILE_DEGRADED);
    // More than one member led over the run: the crashes really moved the primary around.
    let distinct: BTreeSet<&String> = leaders.iter().collect();
    assert!(distinct.len() >= 2, "leaders: {leaders:?}");
}
