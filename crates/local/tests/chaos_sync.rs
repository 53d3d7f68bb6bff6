//! The chaos runner's short version, in CI: one round of every fault it can inject, on one
//! 3-member cluster in synchronous mode (as examples/02-hippo-ha.yaml), each round with
//! writers on every member and checked by `common/chaos.rs`: no acknowledged write lost, none
//! invented, never two members acknowledging writes, every member streaming afterwards and
//! `tusk local status` right about who is primary. `src/bin/tusk-chaos.rs` runs the same
//! rounds many times, and with synchronous mode off. Real etcd, Patroni and PostgreSQL on
//! 127.43.10.x.

#[path = "common/chaos.rs"]
mod chaos;
#[path = "common/ha.rs"]
mod ha;
#[path = "common/ledger.rs"]
mod ledger;

use chaos::Fault;

/// The faults a round can inject today; partitions need the members in network namespaces
/// of the runner's own, which the runner does not build yet (it reports them as not
/// injected, never as passed).
const FAULTS: [Fault; 5] = [
    Fault::KillPrimary,
    Fault::KillReplica,
    Fault::FreezePrimary,
    Fault::FreezePatroni,
    Fault::EtcdLoss,
];

#[test]
fn one_round_of_each_fault_in_synchronous_mode_loses_nothing() {
    let (cluster, file) = chaos::fault_cluster("127.43.10", true);

    let mut failed = Vec::new();
    for fault in FAULTS {
        let round = chaos::run_round(&cluster, &file, fault, chaos::TTL);
        eprintln!("{}: {}", fault.name(), round.summary());
        let failures = round.failures();
        if !failures.is_empty() {
            failed.push(format!("{}: {}", fault.name(), failures.join("; ")));
        }
        if fault == Fault::KillPrimary {
            assert!(round.failover, "killing the primary hands over the lease");
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
