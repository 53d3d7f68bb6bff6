//! Fault rounds against a `tusk local` cluster, shared by the chaos runner
//! (`src/bin/tusk-chaos.rs`) and its short CI version (`tests/chaos_sync.rs`). Each round
//! starts writers on every member (`ledger.rs`), injects one fault, heals, and checks what
//! the ledger shows against the rows the final primary holds: nothing acknowledged lost,
//! nothing invented, at most one member acknowledging writes at a time, every member
//! streaming from the primary again, and `tusk local status` naming the member that really
//! is the primary. A fault that could not be injected is reported as such, never as a pass.
//!
//! Signals go only to processes this cluster recorded (its members' Patroni and PostgreSQL,
//! its etcd); every stopped process is resumed on drop, also when a round panics.
//! Included by path next to `ha.rs` and `ledger.rs`.

#![allow(dead_code)] // the runner and the test use different parts

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::ha::{self, Cluster};
use crate::ledger::{self, Ledger, Verdict};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of the primary's Patroni, postmaster and backends (a dead machine).
    KillPrimary,
    /// The same to a replica.
    KillReplica,
    /// SIGSTOP of the primary's Patroni and PostgreSQL together, for three leases.
    FreezePrimary,
    /// SIGSTOP of the primary's Patroni alone: PostgreSQL keeps serving.
    FreezePatroni,
    /// etcd frozen for two leases (every request hangs, as to a dead host).
    EtcdLoss,
    /// The primary cut off from etcd and the replicas, its clients still reaching it.
    PartitionPrimary,
    /// A replica cut off from everything.
    PartitionReplica,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::KillPrimary,
        Fault::KillReplica,
        Fault::FreezePrimary,
        Fault::FreezePatroni,
        Fault::EtcdLoss,
        Fault::PartitionPrimary,
        Fault::PartitionReplica,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillPrimary => "kill-primary",
            Fault::KillReplica => "kill-replica",
            Fault::FreezePrimary => "freeze-primary",
            Fault::FreezePatroni => "freeze-patroni",
            Fault::EtcdLoss => "etcd-loss",
            Fault::PartitionPrimary => "partition-primary",
            Fault::PartitionReplica => "partition-replica",
        }
    }

    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// What one round showed.
#[derive(Debug)]
pub struct Round {
    pub fault: Fault,
    /// Why the fault could not be injected; the round then proves nothing.
    pub not_injected: Option<String>,
    /// The primary after the round is another member than before it.
    pub failover: bool,
    /// The longest time without any acknowledged write after the fault began.
    pub write_gap: Duration,
    pub verdict: Verdict,
    /// Members not streaming from the primary once the round healed.
    pub not_streaming: Vec<String>,
    /// Members `tusk local status` gave another role than PostgreSQL's own.
    pub status_wrong: Vec<String>,
}

impl Round {
    /// One line for a test's log: failover, longest write gap and the ledger's verdict.
    pub fn summary(&self) -> String {
        format!(
            "failover {}, longest write gap {:.1}s, {:?}",
            self.failover,
            self.write_gap.as_secs_f64(),
            self.verdict
        )
    }

    /// The round's failures, empty when it passed (a round not injected never passes).
    pub fn failures(&self) -> Vec<String> {
        self.failures_counting_loss(true)
    }

    /// The round's failures apart from lost rows: what must hold without synchronous
    /// replication, where a failover may lose the primary's last, unreplicated commits.
    pub fn failures_beyond_async_loss(&self) -> Vec<String> {
        self.failures_counting_loss(false)
    }

    fn failures_counting_loss(&self, count_lost: bool) -> Vec<String> {
        let mut failures = Vec::new();
        if let Some(reason) = &self.not_injected {
            failures.push(format!("not injected: {reason}"));
            return failures;
        }
        if count_lost && !self.verdict.lost.is_empty() {
            failures.push(format!(
                "{} of {} acknowledged rows lost",
                self.verdict.lost.len(),
                self.verdict.acknowledged
            ));
        }
        if !self.verdict.invented.is_empty() {
            failures.push(format!("rows never written: {:?}", self.verdict.invented));
        }
        if self.verdict.double_primary >= DOUBLE_PRIMARY_NOISE {
            failures.push(format!(
                "two members acknowledged writes for {:.1}s",
                self.verdict.double_primary.as_secs_f64()
            ));
        }
        if !self.not_streaming.is_empty() {
            failures.push(format!("not streaming: {:?}", self.not_streaming));
        }
        if !self.status_wrong.is_empty() {
            failures.push(format!("status wrong about {:?}", self.status_wrong));
        }
        failures
    }
}

/// Acknowledgements are timed when a writer thread sees them: on a loaded machine a late
/// delivery looks like milliseconds of overlap, a double primary like seconds.
pub const DOUBLE_PRIMARY_NOISE: Duration = Duration::from_secs(1);

/// Stopped processes, resumed when dropped.
struct Stopped(Vec<u32>);

impl Stopped {
    fn new(pids: Vec<u32>) -> Stopped {
        for pid in &pids {
            tusk_local::system::signal(*pid, Signal::SIGSTOP);
        }
        Stopped(pids)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for pid in &self.0 {
            tusk_local::system::signal(*pid, Signal::SIGCONT);
        }
    }
}

/// The chaos rounds' lease: short, so a round takes about a minute.
pub const TTL: u32 = 10;

/// A fresh 3-member cluster for fault rounds on `network` (`127.x.y`): examples/02-hippo-ha
/// with [`TTL`], `loop_wait` 2, no backups, synchronous mode as given. Returns it and its
/// manifest file.
pub fn fault_cluster(network: &str, synchronous: bool) -> (Cluster, std::path::PathBuf) {
    let edit = crate::ha::ManifestEdit {
        ttl: Some(TTL),
        loop_wait: Some(2),
        synchronous_mode: Some(synchronous),
        without_backups: true,
        ..crate::ha::ManifestEdit::default()
    };
    Cluster::ha_example(network, &edit)
}

/// Runs one round of `fault` on `cluster` (up from `manifest`, lease `ttl` seconds, the
/// test table created). `up` heals what the fault stopped.
pub fn run_round(cluster: &Cluster, manifest: &Path, fault: Fault, ttl: u32) -> Round {
    let lease = Duration::from_secs(ttl.into());
    // Each round's ledger numbers its rows from 1: start from an empty table.
    cluster
        .superuser_sql(&cluster.leader(), "TRUNCATE rows")
        .expect("emptying the table");
    let ledger = Ledger::start(cluster, Duration::from_millis(20));
    ledger.wait_acks_since(Instant::now(), 20, ha::WAIT_LIMIT);
    let old = cluster.leader();
    let report = cluster.status();
    let member = |name: &str| {
        report
            .members
            .iter()
            .find(|m| m.name == name)
            .expect("a recorded member")
            .clone()
    };
    let replica = report
        .members
        .iter()
        .find(|m| m.name != old)
        .map(|m| m.name.clone());
    let injected_at = Instant::now();
    let mut not_injected = None;
    match fault {
        Fault::KillPrimary => {
            cluster.crash_member(&old);
            cluster.wait_new_leader(&old);
        }
        Fault::KillReplica => match &replica {
            Some(name) => {
                cluster.crash_member(name);
                std::thread::sleep(lease);
            }
            None => not_injected = Some("the cluster has no replica".to_owned()),
        },
        Fault::FreezePrimary => {
            let m = member(&old);
            let mut pids: Vec<u32> = m.pids.patroni.into_iter().collect();
            if let Some(postmaster) = m.pids.postgres {
                pids.push(postmaster);
                pids.extend(ha::children_of(postmaster));
            }
            let stopped = Stopped::new(pids);
            std::thread::sleep(3 * lease);
            drop(stopped);
        }
        Fault::FreezePatroni => {
            let stopped = Stopped::new(member(&old).pids.patroni.into_iter().collect());
            std::thread::sleep(3 * lease);
            drop(stopped);
        }
        Fault::EtcdLoss => match tusk_local::etcd::pid(&cluster.layout()) {
            Some(etcd) => {
                let stopped = Stopped::new(vec![etcd]);
                std::thread::sleep(2 * lease);
                drop(stopped);
            }
            None => not_injected = Some("etcd is not running".to_owned()),
        },
        Fault::PartitionPrimary | Fault::PartitionReplica => {
            not_injected = Some(
                "partitions need the members in network namespaces of the runner's own; \
                 not built yet"
                    .to_owned(),
            )
        }
    }

    // Heal: bring back what was killed, then let every member settle and stream.
    cluster.up(manifest).expect("up heals the cluster");
    let not_streaming = wait_streaming(cluster);
    ledger.wait_acks_since(Instant::now(), 20, ha::WAIT_LIMIT);
    let (entries, attempted) = ledger.stop();

    let leader = cluster.leader();
    let verdict = ledger::verdict(&entries, attempted, &cluster.stored_ids(&leader));
    let write_gap =
        ha::longest_gap_around(entries.iter().map(|e| e.at), injected_at, Instant::now())
            .map(Duration::from_secs_f64)
            .unwrap_or_default();
    Round {
        fault,
        not_injected,
        failover: leader != old,
        write_gap,
        verdict,
        not_streaming,
        status_wrong: status_disagreements(cluster),
    }
}

/// Waits (bounded) for one running leader with every other member streaming from it;
/// returns the members still not streaming at the bound.
fn wait_streaming(cluster: &Cluster) -> Vec<String> {
    let start = Instant::now();
    loop {
        let report = cluster.status();
        let (leader, streaming) = cluster.streaming_from_leader();
        let missing: Vec<String> = report
            .members
            .iter()
            .filter(|m| m.name != leader && !streaming.contains(&m.name))
            .map(|m| m.name.clone())
            .collect();
        if missing.is_empty() || start.elapsed() > ha::WAIT_LIMIT {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Members whose role in `tusk local status` is not what their PostgreSQL says it is.
fn status_disagreements(cluster: &Cluster) -> Vec<String> {
    cluster
        .status()
        .members
        .iter()
        .filter(|m| {
            let in_recovery = cluster
                .superuser_sql(&m.name, "SELECT pg_is_in_recovery()")
                .unwrap_or_default();
            let primary = in_recovery == "f";
            primary != (m.role == "leader")
        })
        .map(|m| m.name.clone())
        .collect()
}
