//! A write ledger for fault tests: one writer per member, each opening a new connection to
//! that member's own address for every insert (no `target_session_attrs`: a member that
//! should have stopped taking writes but still does is caught, not skipped), and recording
//! which member acknowledged each row and when. Ids come from one counter, so an id is
//! attempted once, by one writer; an insert whose outcome the writer did not see is not
//! acknowledged and may or may not exist afterwards.
//!
//! Included by path next to `ha.rs` (`mod ha; mod ledger;`).

#![allow(dead_code)] // each test binary reads a different part of the verdict

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::config::SslMode;

use crate::ha::{tls_config, Cluster, TEST_PASSWORD, TEST_USER};

/// Bound on one connection plus insert: a commit waiting for a synchronous standby that is
/// gone must not hang the writer (its outcome is then unknown).
const ATTEMPT_LIMIT: Duration = Duration::from_secs(5);

/// One acknowledged insert.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: i64,
    /// The member's address the connection went to.
    pub host: String,
    pub at: Instant,
}

pub struct Ledger {
    stop: Arc<AtomicBool>,
    entries: Arc<Mutex<Vec<Entry>>>,
    attempted: Arc<AtomicI64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Ledger {
    /// Starts one writer per member of `cluster`, each pausing `pause` between inserts.
    pub fn start(cluster: &Cluster, pause: Duration) -> Ledger {
        let stop = Arc::new(AtomicBool::new(false));
        let entries = Arc::new(Mutex::new(Vec::new()));
        let attempted = Arc::new(AtomicI64::new(0));
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(&cluster.ca_file()));
        let threads = cluster
            .member_hosts()
            .into_iter()
            .map(|host| {
                let (stop, entries, attempted, tls) = (
                    stop.clone(),
                    entries.clone(),
                    attempted.clone(),
                    tls.clone(),
                );
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("tokio runtime");
                    runtime.block_on(write_loop(host, tls, pause, stop, entries, attempted));
                })
            })
            .collect();
        Ledger {
            stop,
            entries,
            attempted,
            threads,
        }
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().unwrap().clone()
    }

    /// Waits (bounded by `limit`) until `count` inserts were acknowledged after `since`;
    /// returns how many were.
    pub fn wait_acks_since(&self, since: Instant, count: usize, limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            let seen = self.entries().iter().filter(|e| e.at > since).count();
            if seen >= count || start.elapsed() > limit {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops every writer; returns the acknowledged inserts and the highest id attempted.
    pub fn stop(mut self) -> (Vec<Entry>, i64) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            thread.join().expect("writer thread");
        }
        (self.entries(), self.attempted.load(Ordering::SeqCst))
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn write_loop(
    host: String,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    pause: Duration,
    stop: Arc<AtomicBool>,
    entries: Arc<Mutex<Vec<Entry>>>,
    attempted: Arc<AtomicI64>,
) {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&host)
        .port(5432)
        .user(TEST_USER)
        .password(TEST_PASSWORD)
        .dbname("postgres")
        .application_name("tusk-ledger")
        .connect_timeout(Duration::from_secs(2))
        .ssl_mode(SslMode::Require);
    while !stop.load(Ordering::SeqCst) {
        let id = attempted.fetch_add(1, Ordering::SeqCst) + 1;
        let attempt = async {
            let (client, connection) = config.connect(tls.clone()).await.ok()?;
            tokio::spawn(async move { drop(connection.await) });
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
            client
                .execute("INSERT INTO rows (id) VALUES ($1)", &params)
                .await
                .ok()
        };
        if let Ok(Some(_)) = tokio::time::timeout(ATTEMPT_LIMIT, attempt).await {
            entries.lock().unwrap().push(Entry {
                id,
                host: host.clone(),
                at: Instant::now(),
            });
        }
        tokio::time::sleep(pause).await;
    }
}

/// What a round's ledger shows against the rows the final primary holds.
#[derive(Debug)]
pub struct Verdict {
    pub acknowledged: usize,
    /// Acknowledged ids the final primary does not have.
    pub lost: Vec<i64>,
    /// Ids the final primary has that no writer ever attempted.
    pub invented: Vec<i64>,
    /// Acknowledgements per member address.
    pub by_host: BTreeMap<String, usize>,
    /// The longest time during which two members both acknowledged writes: the overlap of
    /// their first-to-last acknowledgement spans (one fault, so at most one handover).
    pub double_primary: Duration,
}

pub fn verdict(entries: &[Entry], attempted: i64, stored: &BTreeSet<i64>) -> Verdict {
    let lost = entries
        .iter()
        .map(|e| e.id)
        .filter(|id| !stored.contains(id))
        .collect();
    let invented = stored
        .iter()
        .copied()
        .filter(|id| *id < 1 || *id > attempted)
        .collect();
    let mut spans: BTreeMap<String, (Instant, Instant)> = BTreeMap::new();
    let mut by_host: BTreeMap<String, usize> = BTreeMap::new();
    for e in entries {
        *by_host.entry(e.host.clone()).or_default() += 1;
        let span = spans.entry(e.host.clone()).or_insert((e.at, e.at));
        span.0 = span.0.min(e.at);
        span.1 = span.1.max(e.at);
    }
    let spans: Vec<(Instant, Instant)> = spans.into_values().collect();
    let mut double_primary = Duration::ZERO;
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            let start = a.0.max(b.0);
            let end = a.1.min(b.1);
            if end > start {
                double_primary = double_primary.max(end - start);
            }
        }
    }
    Verdict {
        acknowledged: entries.len(),
        lost,
        invented,
        by_host,
        double_primary,
    }
}
