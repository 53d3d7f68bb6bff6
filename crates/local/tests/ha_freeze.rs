//! A primary whose Patroni freezes (SIGSTOP) while its PostgreSQL keeps running, for longer
//! than the leader lease, then wakes up (SIGCONT): in synchronous mode no acknowledged write
//! may be lost. The synchronous standby takes the lease over while the old Patroni is frozen;
//! when it wakes it must follow the new leader, never take the leader key back and rewind
//! the new timeline away. One writer per member connects to that member's own address for
//! every insert and records which member acknowledged each row (`common/ledger.rs`).
//! Real etcd, Patroni and PostgreSQL on 127.43.7.x; only the processes this cluster
//! recorded are signalled, and a frozen Patroni is resumed even when the test fails.

#[path = "common/ha.rs"]
mod ha;
#[path = "common/ledger.rs"]
mod ledger;

use std::time::{Duration, Instant};

use ha::{Cluster, ManifestEdit};
use ledger::Ledger;
use nix::sys::signal::Signal;

const TTL: u32 = 15;
/// Longer than the lease, so a replica may (and does) take over while Patroni is frozen.
const FREEZE: Duration = Duration::from_secs(45);

/// Resumes a stopped process when dropped, so a failing assertion never leaves a frozen
/// Patroni behind (`down` could not stop it).
struct Frozen(u32);

impl Frozen {
    fn new(pid: u32) -> Frozen {
        tusk_local::system::signal(pid, Signal::SIGSTOP);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        tusk_local::system::signal(self.0, Signal::SIGCONT);
    }
}

#[test]
fn a_frozen_primary_patroni_never_takes_the_lease_back_and_loses_no_acknowledged_write() {
    let edit = ManifestEdit {
        ttl: Some(TTL),
        loop_wait: Some(5),
        synchronous_mode: Some(true),
        without_backups: true,
        ..ManifestEdit::default()
    };
    let (cluster, _) = Cluster::ha_example("127.43.7", &edit);

    let ledger = Ledger::start(&cluster, Duration::from_millis(20));
    let started = Instant::now();
    assert!(
        ledger.wait_acks_since(started, 20, ha::WAIT_LIMIT) >= 20,
        "the writers commit before the fault"
    );

    let old = cluster.leader();
    let patroni = cluster.patroni_pid(&old);
    let frozen_at = Instant::now();
    let frozen = Frozen::new(patroni);
    // The fault must really hand the lease over, or the round proves nothing.
    let new = cluster.wait_new_leader(&old);
    let promoted_after = frozen_at.elapsed();
    std::thread::sleep(FREEZE.saturating_sub(frozen_at.elapsed()));
    drop(frozen);
    let resumed_at = Instant::now();

    // Give the woken Patroni several HA loops to act on its stale view, then settle.
    std::thread::sleep(Duration::from_secs(3 * 5));
    cluster.wait_for("every member running again", |r| {
        r.members.iter().all(|m| m.state == "running").then_some(())
    });
    cluster.assert_every_replica_streams();
    let after = ledger.wait_acks_since(Instant::now(), 20, ha::WAIT_LIMIT);
    let (entries, attempted) = ledger.stop();

    let leader = cluster.leader();
    let verdict = ledger::verdict(&entries, attempted, &cluster.stored_ids(&leader));
    eprintln!(
        "{old} frozen; {new} promoted after {:.1}s; resumed after {:.1}s; final leader \
         {leader}; {after} commits after settling; {verdict:?}",
        promoted_after.as_secs_f64(),
        resumed_at.duration_since(frozen_at).as_secs_f64(),
    );
    assert!(after >= 20, "writes continue after the fault ({after})");
    assert!(
        verdict.lost.is_empty(),
        "{} of {} acknowledged rows lost: {:?}",
        verdict.lost.len(),
        verdict.acknowledged,
        verdict.lost
    );
    assert!(
        verdict.invented.is_empty(),
        "rows nobody wrote: {:?}",
        verdict.invented
    );
    assert_eq!(
        leader, new,
        "the member promoted during the freeze keeps the lease once {old} wakes up"
    );
    let on_new = verdict.by_host.get(&cluster.host_of(&new)).copied();
    assert!(
        on_new.unwrap_or(0) > 0,
        "the promoted member acknowledged writes (they are what a rewind would lose)"
    );
    // Acknowledgements are timed when the writer thread sees them, which on a loaded machine
    // can lag the commit: a double primary shows as seconds, a late delivery as milliseconds.
    assert!(
        verdict.double_primary < Duration::from_secs(1),
        "two members acknowledged writes at once for {:?}",
        verdict.double_primary
    );
}
