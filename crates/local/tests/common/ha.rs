//! Shared harness for the `tusk local` HA tests (`tests/ha_*.rs`) and the failover benchmark
//! (`src/bin/tusk-failover-bench.rs`); both include this file with `#[path]`: a cluster in its own
//! state directory on its own loopback network, manifests derived from the examples, crashing
//! a member the way a dead machine would (SIGKILL of its Patroni, its postmaster and the
//! postmaster's children), and a writer that follows the primary through libpq-style
//! multi-host connections and records every commit it saw acknowledged.
//!
//! Touches only what it creates: a directory under the system temp dir (removed on drop) and
//! processes recorded in that state directory (stopped with `down` on drop). Uses no
//! dev-dependency, so the benchmark binary can include it.

#![allow(dead_code)] // each test binary and the benchmark use a different part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_yaml::Value;
use tokio_postgres::config::{SslMode, TargetSessionAttrs};
use tusk_local::{Layout, StatusReport, UpOptions};

pub const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";
/// The password role the tests connect as over TCP (the superuser has no TCP access).
pub const TEST_USER: &str = "tester";
pub const TEST_PASSWORD: &str = "tester-password";
/// Bound on every wait in the harness; waits end as soon as their condition holds.
pub const WAIT_LIMIT: Duration = Duration::from_secs(180);

pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// Edits to an example manifest, applied to its YAML tree.
#[derive(Clone, Debug, Default)]
pub struct ManifestEdit {
    /// `spec.instances[0].replicas`
    pub replicas: Option<u32>,
    /// `spec.patroni.leaderLeaseDurationSeconds` / `syncPeriodSeconds`
    pub ttl: Option<u32>,
    pub loop_wait: Option<u32>,
    /// `spec.patroni.dynamicConfiguration.synchronous_mode`
    pub synchronous_mode: Option<bool>,
    /// Extra `spec.patroni.dynamicConfiguration.postgresql.parameters`.
    pub parameters: Vec<(&'static str, &'static str)>,
    /// Drops `spec.backups` (no WAL archiving, no repository).
    pub without_backups: bool,
}

/// The text of `examples/<name>` with `edit` applied.
pub fn manifest(name: &str, edit: &ManifestEdit) -> String {
    let text = std::fs::read_to_string(example(name)).expect("example manifest");
    let mut doc: Value = serde_yaml::from_str(&text).expect("example is YAML");
    let spec = &mut doc["spec"];
    if edit.without_backups {
        spec.as_mapping_mut().unwrap().remove("backups");
    }
    if let Some(replicas) = edit.replicas {
        spec["instances"][0]["replicas"] = Value::from(replicas);
    }
    if spec.get("patroni").is_none() {
        spec["patroni"] = Value::Mapping(Default::default());
    }
    if let Some(ttl) = edit.ttl {
        spec["patroni"]["leaderLeaseDurationSeconds"] = Value::from(ttl);
    }
    if let Some(loop_wait) = edit.loop_wait {
        spec["patroni"]["syncPeriodSeconds"] = Value::from(loop_wait);
    }
    let patroni = &mut spec["patroni"];
    if patroni.get("dynamicConfiguration").is_none() {
        patroni["dynamicConfiguration"] = Value::Mapping(Default::default());
    }
    let dynamic = &mut patroni["dynamicConfiguration"];
    if let Some(mode) = edit.synchronous_mode {
        dynamic["synchronous_mode"] = Value::from(mode);
    }
    if !edit.parameters.is_empty() {
        if dynamic.get("postgresql").is_none() {
            dynamic["postgresql"] = Value::Mapping(Default::default());
        }
        if dynamic["postgresql"].get("parameters").is_none() {
            dynamic["postgresql"]["parameters"] = Value::Mapping(Default::default());
        }
        for (key, value) in &edit.parameters {
            dynamic["postgresql"]["parameters"][*key] = Value::from(*value);
        }
    }
    serde_yaml::to_string(&doc).expect("YAML serializes")
}

/// A cluster in its own state directory on `network`; `down` and removal on drop.
pub struct Cluster {
    root: PathBuf,
    pub state_dir: PathBuf,
    pub network: String,
    manifest_counter: std::cell::Cell<u32>,
}

impl Cluster {
    pub fn new(network: &str) -> Cluster {
        use std::os::unix::fs::PermissionsExt;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let root =
            std::env::temp_dir().join(format!("tusk-ha-{network}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&root).expect("creating the test dir");
        // Servers run as the `postgres` OS user when tests run as root: it must enter here.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        Cluster {
            state_dir: root.join("state"),
            root,
            network: network.into(),
            manifest_counter: std::cell::Cell::new(0),
        }
    }

    /// A cluster on `network` from examples/02-hippo-ha.yaml with `edit`, up, with the test
    /// role and table; returns it and its manifest.
    pub fn ha_example(network: &str, edit: &ManifestEdit) -> (Cluster, PathBuf) {
        let cluster = Cluster::new(network);
        let file = cluster.write_manifest(&manifest("02-hippo-ha.yaml", edit));
        cluster.up(&file).expect("up");
        cluster.create_test_table();
        (cluster, file)
    }

    pub fn layout(&self) -> Layout {
        Layout::new(&self.state_dir)
    }

    /// Writes `text` to a new file next to the state dir and returns its path.
    pub fn write_manifest(&self, text: &str) -> PathBuf {
        let n = self.manifest_counter.get() + 1;
        self.manifest_counter.set(n);
        let path = self.root.join(format!("manifest-{n}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn up(&self, manifest: &Path) -> tusk_local::Result<()> {
        let options = UpOptions {
            manifest: manifest.into(),
            state_dir: Some(self.state_dir.clone()),
            network: Some(self.network.clone()),
            wait_limit: WAIT_LIMIT,
        };
        let quiet = std::env::var_os("TUSK_HA_QUIET").is_some();
        tusk_local::up(&options, &mut |line| {
            if !quiet {
                eprintln!("[{}] {line}", self.network)
            }
        })
    }

    pub fn status(&self) -> StatusReport {
        tusk_local::status(&self.layout()).expect("status")
    }

    /// The validated manifest `up` applied last.
    pub fn applied(&self) -> tusk_api::ValidatedCluster {
        let text = std::fs::read_to_string(self.layout().manifest()).unwrap();
        tusk_api::validate_yaml(&text).expect("applied manifest is valid")
    }

    pub fn host_of(&self, member: &str) -> String {
        let report = self.status();
        report
            .members
            .iter()
            .find(|m| m.name == member)
            .unwrap_or_else(|| panic!("no member {member} in {report:#?}"))
            .host
            .clone()
    }

    /// The running leader's name, waiting (bounded) for one.
    pub fn leader(&self) -> String {
        self.wait_for("a running leader", |r| {
            r.members
                .iter()
                .find(|m| m.role == "leader" && m.state == "running")
                .map(|m| m.name.clone())
        })
    }

    /// Polls `status` until `check` returns something; panics with the last report after
    /// [`WAIT_LIMIT`].
    pub fn wait_for<T>(&self, what: &str, mut check: impl FnMut(&StatusReport) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            let report = self.status();
            if let Some(found) = check(&report) {
                return found;
            }
            if start.elapsed() > WAIT_LIMIT {
                panic!("timed out waiting for {what}: {report:#?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Until a member other than `old` is the running leader; returns it.
    pub fn wait_new_leader(&self, old: &str) -> String {
        self.wait_for(&format!("a leader other than {old}"), |r| {
            r.members
                .iter()
                .find(|m| m.role == "leader" && m.state == "running" && m.name != old)
                .map(|m| m.name.clone())
        })
    }

    /// Members whose WAL receivers stream from the running leader now, per its
    /// `pg_stat_replication` (Patroni 3.0 reports replicas as `running`, streaming or not).
    pub fn streaming_from_leader(&self) -> (String, Vec<String>) {
        let leader = self.leader();
        let mut names: Vec<String> = self
            .superuser_sql(
                &leader,
                "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
            )
            .expect("reading pg_stat_replication on the leader")
            .lines()
            .map(str::to_owned)
            .collect();
        names.sort();
        (leader, names)
    }

    /// Asserts one running leader and every other member streaming from it.
    pub fn assert_every_replica_streams(&self) {
        let report = self.status();
        let (leader, streaming) = self.streaming_from_leader();
        let mut replicas: Vec<String> = report
            .members
            .iter()
            .filter(|m| m.name != leader)
            .map(|m| m.name.clone())
            .collect();
        replicas.sort();
        assert_eq!(streaming, replicas, "leader {leader}: {report:#?}");
        for m in &report.members {
            assert_eq!(m.state, "running", "{m:#?}");
        }
    }

    /// SQL as the superuser over `member`'s Unix socket.
    pub fn superuser_sql(&self, member: &str, sql: &str) -> tusk_local::Result<String> {
        tusk_local::members::psql(&self.applied(), &self.layout(), member, sql)
            .map(|out| out.trim().to_owned())
    }

    /// Creates the TCP test role and a table `rows (id bigint primary key, note text)` it
    /// may write, on the current leader.
    pub fn create_test_table(&self) {
        let leader = self.leader();
        self.superuser_sql(
            &leader,
            &format!(
                "CREATE ROLE {TEST_USER} LOGIN PASSWORD '{TEST_PASSWORD}'; \
                 CREATE TABLE rows (id bigint PRIMARY KEY, note text); \
                 GRANT SELECT, INSERT ON rows TO {TEST_USER};"
            ),
        )
        .expect("creating the test role and table on the leader");
    }

    pub fn ca_file(&self) -> PathBuf {
        self.state_dir.join("ca/ca.crt")
    }

    /// Every member's address, in state order: what a client's multi-host URI lists.
    pub fn member_hosts(&self) -> Vec<String> {
        self.status().members.into_iter().map(|m| m.host).collect()
    }

    /// libpq's multi-host connection string for the test role: TLS verified against the
    /// cluster CA and the server's address, and only the read-write member accepted.
    pub fn multi_host_conninfo(&self) -> String {
        format!(
            "host={} port=5432 dbname=postgres user={TEST_USER} target_session_attrs=read-write \
             sslmode=verify-full sslrootcert={} connect_timeout=3",
            self.member_hosts().join(","),
            self.ca_file().display()
        )
    }

    /// Runs SQL through real libpq (`psql`) with [`Self::multi_host_conninfo`].
    pub fn psql_multi_host(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(PSQL)
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.multi_host_conninfo())
            .args(["-c", sql])
            .env("PGPASSWORD", TEST_PASSWORD)
            .output()
            .expect("psql runs");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Kills `member` the way a crashed machine would: SIGKILL to its Patroni, its
    /// postmaster and every child of the postmaster at once, so no backend or walsender
    /// survives to finish a commit. Only pids recorded for this state dir are signalled.
    /// Returns the pids killed.
    pub fn crash_member(&self, member: &str) -> Vec<u32> {
        self.crash_member_timed(member).0
    }

    /// [`Self::crash_member`], also returning when the first SIGKILL was sent.
    pub fn crash_member_timed(&self, member: &str) -> (Vec<u32>, Instant) {
        let report = self.status();
        let pids = &report
            .members
            .iter()
            .find(|m| m.name == member)
            .unwrap_or_else(|| panic!("no member {member}"))
            .pids;
        let patroni = pids.patroni.expect("patroni runs");
        let postmaster = pids.postgres.expect("postgres runs");
        let mut victims = vec![patroni, postmaster];
        victims.extend(children_of(postmaster));
        let killed_at = Instant::now();
        for pid in &victims {
            tusk_local::system::signal(*pid, nix::sys::signal::Signal::SIGKILL);
        }
        let paths = self.layout().member(member);
        let data_dir = paths.data_dir().to_string_lossy().into_owned();
        assert!(
            tusk_local::system::wait_gone(postmaster, &data_dir, Duration::from_secs(10)),
            "postmaster {postmaster} survived SIGKILL"
        );
        (victims, killed_at)
    }

    /// Graceful stop of `member`'s Patroni (SIGTERM, what an orderly node shutdown sends):
    /// Patroni stops PostgreSQL and hands the leader key back. Does not wait; returns when the
    /// signal was sent.
    pub fn terminate_patroni(&self, member: &str) -> Instant {
        let pid = self.patroni_pid(member);
        let sent_at = Instant::now();
        tusk_local::system::signal(pid, nix::sys::signal::Signal::SIGTERM);
        sent_at
    }

    /// The pid of `member`'s running Patroni.
    pub fn patroni_pid(&self, member: &str) -> u32 {
        self.status()
            .members
            .iter()
            .find(|m| m.name == member)
            .and_then(|m| m.pids.patroni)
            .unwrap_or_else(|| panic!("{member}'s Patroni runs"))
    }

    /// The ids in the test table on `member`.
    pub fn stored_ids(&self, member: &str) -> std::collections::BTreeSet<i64> {
        self.superuser_sql(member, "SELECT id FROM rows")
            .expect("reading the test table")
            .lines()
            .map(|l| l.parse().expect("an id"))
            .collect()
    }

    /// `extract(epoch from pg_postmaster_start_time())` of `member`.
    pub fn postmaster_start(&self, member: &str) -> f64 {
        self.superuser_sql(
            member,
            "SELECT extract(epoch FROM pg_postmaster_start_time())",
        )
        .expect("reading the postmaster start time")
        .parse()
        .expect("a number")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.state_dir.join("state.json").is_file() {
            let _ = tusk_local::down(&self.layout(), false, &mut |_| {});
        }
        if std::thread::panicking() {
            // Logs of a failed run are what explains it; data (~500 MB a cluster) goes.
            let members = self.state_dir.join("members");
            for entry in std::fs::read_dir(&members).into_iter().flatten().flatten() {
                let _ = std::fs::remove_dir_all(entry.path().join("pgdata"));
            }
            let _ = std::fs::remove_dir_all(self.state_dir.join("pgbackrest"));
            let _ = std::fs::remove_dir_all(self.state_dir.join("etcd"));
            eprintln!("keeping the logs under {}", self.root.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Direct children of `parent` (the postmaster's backends, walsenders, checkpointer ...).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // Fields after the parenthesised command name: state, ppid, ...
                    let rest = stat.rsplit_once(')')?.1.to_owned();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// A commit the writer saw acknowledged: the row's id and when the acknowledgement arrived.
#[derive(Clone, Copy, Debug)]
pub struct Ack {
    pub id: i64,
    pub at: Instant,
    /// Which of the writer's connections (1, 2, ...) saw the commit: a commit on a later
    /// connection than the one open at a failure went to a member reached after it.
    pub connection: u64,
}

/// A client inserting rows into `rows` in a loop through a multi-host connection
/// (`target_session_attrs=read-write`, TLS verified against the cluster CA), reconnecting
/// after any error. Only commits acknowledged to it are recorded: a statement whose outcome
/// it did not see (error, timeout) is not.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts writing to `cluster`; `pause` between inserts keeps the CPU for the servers.
    pub fn start(cluster: &Cluster, pause: Duration) -> Writer {
        let hosts = cluster.member_hosts();
        let ca = cluster.ca_file();
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, acks) = (stop.clone(), acks.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(write_loop(hosts, ca, pause, stop, acks));
            })
        };
        Writer {
            stop,
            acks,
            thread: Some(thread),
        }
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    pub fn acks_since(&self, since: Instant) -> usize {
        self.acks
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.at > since)
            .count()
    }

    /// Waits (bounded by `limit`) until at least `count` commits were acknowledged after
    /// `since`; returns how many were.
    pub fn wait_acks_since(&self, since: Instant, count: usize, limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            let seen = self.acks_since(since);
            if seen >= count || start.elapsed() > limit {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the writer and returns every acknowledged commit.
    pub fn stop(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("writer thread");
        }
        self.acks()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Bound on one INSERT: a commit waiting on a synchronous standby that is gone must not
/// hang the writer; its outcome is then unknown and it is not recorded.
const STATEMENT_LIMIT: Duration = Duration::from_secs(20);

async fn write_loop(
    hosts: Vec<String>,
    ca: PathBuf,
    pause: Duration,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
) {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(&ca));
    let mut config = tokio_postgres::Config::new();
    config
        .user(TEST_USER)
        .password(TEST_PASSWORD)
        .dbname("postgres")
        .port(5432)
        .application_name("tusk-ha-writer")
        .target_session_attrs(TargetSessionAttrs::ReadWrite)
        .connect_timeout(Duration::from_secs(3))
        .ssl_mode(SslMode::Require);
    for host in &hosts {
        config.host(host);
    }
    // Ids are unique across reconnects, so an unacknowledged attempt never shadows a
    // later acknowledged one.
    let mut next_id: i64 = 1;
    let mut connection_number: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let client = match config.connect(tls.clone()).await {
            Ok((client, connection)) => {
                tokio::spawn(async move { drop(connection.await) });
                connection_number += 1;
                client
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        while !stop.load(Ordering::SeqCst) {
            let id = next_id;
            next_id += 1;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
            let insert = client.execute("INSERT INTO rows (id) VALUES ($1)", &params);
            match tokio::time::timeout(STATEMENT_LIMIT, insert).await {
                Ok(Ok(_)) => acks.lock().unwrap().push(Ack {
                    id,
                    at: Instant::now(),
                    connection: connection_number,
                }),
                _ => break, // reconnect: whichever member is read-write now
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// rustls verifies the chain and the address in the certificate: libpq's `verify-full`.
pub fn tls_config(ca_file: &Path) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("reading the cluster CA") {
        roots.add(cert.expect("a CA certificate")).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Seconds from `since` (the primary was signalled) to the first commit acknowledged on a
/// connection opened after it, waiting at most `limit`. Commits the old primary acknowledged
/// in the moment before it went down arrive on the connection that was open at `since` and do
/// not count: they are not a write on the new primary.
pub fn first_ack_after(writer: &Writer, since: Instant, limit: Duration) -> Result<f64, String> {
    let open_then = writer
        .acks()
        .iter()
        .filter(|a| a.at <= since)
        .map(|a| a.connection)
        .max()
        .unwrap_or(0);
    let start = Instant::now();
    loop {
        let first = writer
            .acks()
            .iter()
            .filter(|a| a.at > since && a.connection > open_then)
            .map(|a| a.at.duration_since(since).as_secs_f64())
            .reduce(f64::min);
        if let Some(seconds) = first {
            return Ok(seconds);
        }
        if start.elapsed() > limit {
            return Err("no commit on a new connection after the leader went away".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The longest interval between consecutive acknowledgements (`times`) that overlaps
/// `[from, to]`: the write outage a client saw during a switchover.
pub fn longest_gap_around(
    times: impl IntoIterator<Item = Instant>,
    from: Instant,
    to: Instant,
) -> Option<f64> {
    let mut times: Vec<Instant> = times.into_iter().collect();
    times.sort();
    times
        .windows(2)
        .filter(|w| w[1] >= from && w[0] <= to)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64())
        .reduce(f64::max)
}
