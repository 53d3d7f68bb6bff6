//! The fencer (`src/fencer.rs`, rule in `tusk_config::fence`) without synchronous
//! replication, where nothing else stops a primary whose Patroni froze: one round of each
//! freeze on a 3-member cluster with writers on every member (`common/chaos.rs`). Without
//! the fencer the frozen-Patroni round gives a double primary of about the lease (18 s in the
//! chaos runner before the fencer existed, 105 of 358 acknowledged rows lost); with it, the
//! old primary's PostgreSQL is killed before any replica can be promoted, so at most one
//! member acknowledges writes at any instant. Rows the old primary acknowledged but had not
//! streamed yet may be lost (that is asynchronous replication) and are only reported.
//! Real etcd, Patroni and PostgreSQL on 127.43.11.x.

#[path = "common/chaos.rs"]
mod chaos;
#[path = "common/ha.rs"]
mod ha;
#[path = "common/ledger.rs"]
mod ledger;

use chaos::Fault;

#[test]
fn a_frozen_primary_is_fenced_before_a_replica_is_promoted() {
    let (cluster, file) = chaos::fault_cluster("127.43.11", false);

    let mut failed = Vec::new();
    for fault in [Fault::FreezePatroni, Fault::FreezePrimary] {
        let old = cluster.leader();
        let round = chaos::run_round(&cluster, &file, fault, chaos::TTL);
        eprintln!("{}: {}", fault.name(), round.summary());
        // The fence is what this proves: the lease must really have moved.
        assert!(
            round.failover,
            "{}: a replica took the lease over",
            fault.name()
        );
        let fenced = std::fs::read_to_string(cluster.layout().member(&old).dir.join("fencer.log"))
            .unwrap_or_default();
        if !fenced.contains("FENCED") {
            failed.push(format!("{}: {old}'s fencer did not act", fault.name()));
        }
        let failures = round.failures_beyond_async_loss();
        if !failures.is_empty() {
            failed.push(format!("{}: {}", fault.name(), failures.join("; ")));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
