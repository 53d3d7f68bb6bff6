//! Losing the DCS does not take the database down: etcd is frozen (SIGSTOP: every request to
//! it hangs, as to a dead host) for three leases while every member still reaches the others.
//! With Patroni's `failsafe_mode` (Tusk's default) the primary keeps acknowledging writes the
//! whole time, and once etcd is back nothing fails over: the same member leads, on the same
//! timeline, with every acknowledged row. Without it the primary would demote itself as soon
//! as it could not renew the lease. Real etcd, Patroni and PostgreSQL on 127.43.8.x; only the
//! etcd this cluster recorded is signalled, and resumed even when the test fails.

#[path = "common/ha.rs"]
mod ha;
#[path = "common/ledger.rs"]
mod ledger;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ha::{Cluster, ManifestEdit};
use ledger::Ledger;
use nix::sys::signal::Signal;

const TTL: u32 = 10;
const OUTAGE: Duration = Duration::from_secs(3 * TTL as u64);

/// Resumes the stopped etcd when dropped.
struct Frozen(u32);

impl Drop for Frozen {
    fn drop(&mut self) {
        tusk_local::system::signal(self.0, Signal::SIGCONT);
    }
}

fn timeline(cluster: &Cluster, member: &str) -> String {
    cluster
        .superuser_sql(member, "SELECT timeline_id FROM pg_control_checkpoint()")
        .expect("reading the timeline")
}

#[test]
fn the_primary_keeps_serving_through_an_etcd_outage_and_nothing_fails_over_after_it() {
    let edit = ManifestEdit {
        ttl: Some(TTL),
        loop_wait: Some(2),
        without_backups: true,
        ..ManifestEdit::default()
    };
    let (cluster, _) = Cluster::ha_example("127.43.8", &edit);
    let leader = cluster.leader();
    let leader_host = cluster.host_of(&leader);
    let timeline_before = timeline(&cluster, &leader);

    let ledger = Ledger::start(&cluster, Duration::from_millis(20));
    assert!(
        ledger.wait_acks_since(Instant::now(), 20, ha::WAIT_LIMIT) >= 20,
        "the writers commit before the outage"
    );

    let etcd = tusk_local::etcd::pid(&cluster.layout()).expect("etcd runs");
    tusk_local::system::signal(etcd, Signal::SIGSTOP);
    let frozen = Frozen(etcd);
    let stopped_at = Instant::now();
    std::thread::sleep(OUTAGE);
    let during: Vec<ledger::Entry> = ledger
        .entries()
        .into_iter()
        .filter(|e| e.at > stopped_at + Duration::from_secs(TTL as u64))
        .collect();
    drop(frozen);
    let resumed_at = Instant::now();

    // Several HA loops with the DCS back: a failover would happen now if it were to.
    std::thread::sleep(Duration::from_secs(2 * TTL as u64));
    let after = ledger.wait_acks_since(Instant::now(), 20, ha::WAIT_LIMIT);
    let (entries, attempted) = ledger.stop();
    let leader_after = cluster.leader();
    cluster.assert_every_replica_streams();
    let verdict = ledger::verdict(&entries, attempted, &cluster.stored_ids(&leader_after));
    eprintln!(
        "etcd frozen for {:.1}s: {} commits acknowledged after the lease ran out, by {:?}; \
         {after} after; {verdict:?}",
        resumed_at.duration_since(stopped_at).as_secs_f64(),
        during.len(),
        during.iter().map(|e| &e.host).collect::<BTreeSet<_>>(),
    );
    assert!(
        during.len() >= 20,
        "the primary kept acknowledging writes once the lease it could not renew ran out \
         ({} commits)",
        during.len()
    );
    assert!(
        during.iter().all(|e| e.host == leader_host),
        "only the primary {leader} ({leader_host}) acknowledged writes during the outage"
    );
    assert_eq!(leader_after, leader, "no failover after etcd came back");
    assert_eq!(
        timeline(&cluster, &leader_after),
        timeline_before,
        "no promotion happened: the timeline is the same"
    );
    assert!(after >= 20, "writes continue after the outage ({after})");
    assert!(verdict.lost.is_empty(), "lost: {:?}", verdict.lost);
    assert!(verdict.invented.is_empty(), "{:?}", verdict.invented);
}
