//! Failover benchmark for `tusk local` (issue 3, deliverable 6): prints figures, asserts
//! nothing. For each Patroni timing profile — Tusk's defaults and the PGO family's
//! ttl=30 / loop_wait=10 / retry_timeout=10 — and each of N trials, on a fresh 3-member
//! cluster from examples/02-hippo-ha.yaml (synchronous mode; `spec.backups` removed):
//!
//! - `up` to ready: `tusk_local::up` from an empty state dir until every replica streams;
//! - crash: SIGKILL of the primary's Patroni, postmaster and its children, until the first
//!   commit a continuous writer sees acknowledged afterwards (necessarily on another member);
//! - graceful stop: SIGTERM to the primary's Patroni, until the same;
//! - switchover write gap: the longest gap between consecutive acknowledged commits of the
//!   writer around a planned `tusk_local::switchover`.
//!
//! The writer connects as libpq clients do, through every member with
//! `target_session_attrs=read-write` and verified TLS (see tests/common/ha.rs, shared with the
//! HA tests). Runs as `cargo run --release -p tusk-local --bin tusk-failover-bench --
//! --trials 3`; needs the Debian packages `tusk local` needs. Starts and stops only its own
//! clusters, on 127.44.x.y, in directories under the system temp dir.

#[path = "../../tests/common/ha.rs"]
mod ha;

use std::time::{Duration, Instant};

use ha::{first_ack_after, longest_gap_around, manifest, Cluster, ManifestEdit, Writer};

const USAGE: &str = "usage: tusk-failover-bench [--trials N]   (N >= 1, default 3)";

/// A Patroni timing profile, set the way a user would: through `spec.patroni`.
struct Profile {
    label: &'static str,
    ttl: Option<u32>,
    loop_wait: Option<u32>,
}

const PROFILES: [Profile; 2] = [
    Profile {
        label: "tusk defaults",
        ttl: None,
        loop_wait: None,
    },
    Profile {
        label: "PGO family",
        ttl: Some(30),
        loop_wait: Some(10),
    },
];

/// One trial's figures, in seconds.
#[derive(Default)]
struct Trial {
    up_ready: f64,
    crash_to_write: f64,
    sigterm_to_write: f64,
    switchover_gap: f64,
}

fn main() {
    let trials = match parse_trials(std::env::args().skip(1).collect()) {
        Ok(n) => n,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // Progress of `up` is noise here; the figures are the output.
    std::env::set_var("TUSK_HA_QUIET", "1");
    let mut results: Vec<(String, Vec<Trial>)> = Vec::new();
    for (p, profile) in PROFILES.iter().enumerate() {
        let edit = ManifestEdit {
            ttl: profile.ttl,
            loop_wait: profile.loop_wait,
            // Without archiving: with it, a crashed primary's divergent WAL can reach the
            // shared repository and strand a replica (see the HA tests), which would abort
            // trials; archiving does not enter the figures measured here.
            without_backups: true,
            ..ManifestEdit::default()
        };
        let text = manifest("02-hippo-ha.yaml", &edit);
        let settings = tusk_api::validate_yaml(&text)
            .expect("benchmark manifest is valid")
            .patroni;
        // The label states what Patroni really gets, derived retry_timeout included.
        let label = format!(
            "{} (ttl={} loop_wait={} retry_timeout={})",
            profile.label,
            settings.leader_lease_seconds,
            settings.sync_period_seconds,
            settings.retry_timeout_seconds
        );
        let mut figures = Vec::new();
        for t in 0..trials {
            let network = format!("127.44.{}", p * 50 + t + 1);
            eprintln!("{label}: trial {} of {trials} on {network}", t + 1);
            match run_trial(&network, &text) {
                Ok(trial) => figures.push(trial),
                Err(e) => eprintln!("  trial failed, not counted: {e}"),
            }
        }
        results.push((label, figures));
    }
    print_table(&results);
}

fn parse_trials(args: Vec<String>) -> Result<usize, String> {
    match args.as_slice() {
        [] => Ok(3),
        [flag, n] if flag == "--trials" => match n.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("--trials: {n:?} is not a number >= 1")),
        },
        [flag] if flag == "--help" || flag == "-h" => Err(String::new()),
        other => Err(format!("unexpected arguments {other:?}")),
    }
}

/// How long a phase may take before the trial is abandoned (not a figure).
const PHASE_LIMIT: Duration = Duration::from_secs(180);

fn run_trial(network: &str, manifest_text: &str) -> Result<Trial, String> {
    let cluster = Cluster::new(network);
    let file = cluster.write_manifest(manifest_text);
    let mut trial = Trial::default();

    let start = Instant::now();
    cluster.up(&file).map_err(|e| format!("up: {e}"))?;
    trial.up_ready = start.elapsed().as_secs_f64();

    cluster.create_test_table();
    let writer = Writer::start(&cluster, Duration::from_millis(2));
    if writer.wait_acks_since(Instant::now(), 50, PHASE_LIMIT) < 50 {
        return Err("the writer does not commit".into());
    }

    let old = cluster.leader();
    let (_, killed_at) = cluster.crash_member_timed(&old);
    trial.crash_to_write = first_ack_after(&writer, killed_at, PHASE_LIMIT)?;
    cluster
        .up(&file)
        .map_err(|e| format!("up after the crash: {e}"))?;

    let old = cluster.leader();
    let patroni = cluster
        .status()
        .members
        .iter()
        .find(|m| m.name == old)
        .and_then(|m| m.pids.patroni);
    let stopped_at = cluster.terminate_patroni(&old);
    trial.sigterm_to_write = first_ack_after(&writer, stopped_at, PHASE_LIMIT)?;
    if let Some(pid) = patroni {
        let marker = cluster.layout().member(&old).config();
        tusk_local::system::wait_gone(pid, &marker.to_string_lossy(), PHASE_LIMIT);
    }
    cluster
        .up(&file)
        .map_err(|e| format!("up after the graceful stop: {e}"))?;

    writer.wait_acks_since(Instant::now(), 50, PHASE_LIMIT);
    let switch_start = Instant::now();
    tusk_local::switchover(&cluster.layout(), None, PHASE_LIMIT, &mut |_| {})
        .map_err(|e| format!("switchover: {e}"))?;
    let switch_end = Instant::now();
    writer.wait_acks_since(switch_end, 50, PHASE_LIMIT);
    let acks = writer.stop();
    trial.switchover_gap = longest_gap_around(acks.iter().map(|a| a.at), switch_start, switch_end)
        .ok_or("no commits around the switchover")?;
    Ok(trial)
}

fn summary(values: &mut [f64]) -> String {
    if values.is_empty() {
        return format!("{:>24}", "no successful trial");
    }
    values.sort_by(f64::total_cmp);
    let median = if values.len() % 2 == 1 {
        values[values.len() / 2]
    } else {
        (values[values.len() / 2 - 1] + values[values.len() / 2]) / 2.0
    };
    format!(
        "{:>7.2} {:>7.2} {:>7.2}",
        values[0],
        median,
        values[values.len() - 1]
    )
}

fn print_table(results: &[(String, Vec<Trial>)]) {
    type Metric = (&'static str, fn(&Trial) -> f64);
    let metrics: [Metric; 4] = [
        ("kill -9 primary -> first commit", |t| t.crash_to_write),
        ("SIGTERM primary -> first commit", |t| t.sigterm_to_write),
        ("switchover: longest write gap", |t| t.switchover_gap),
        ("up: 3 instances to ready", |t| t.up_ready),
    ];
    for (label, trials) in results {
        println!("\n{label}: {} successful trial(s), seconds", trials.len());
        println!("{:<34} {:>7} {:>7} {:>7}", "", "min", "median", "max");
        for (name, get) in &metrics {
            let mut values: Vec<f64> = trials.iter().map(get).collect();
            println!("{name:<34} {}", summary(&mut values));
        }
    }
}
