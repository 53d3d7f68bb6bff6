//! Chaos runner for `tusk local` clusters: rounds of one fault each while writers on every
//! member keep a ledger of acknowledged rows (tests/common/chaos.rs, shared with the CI
//! version tests/chaos_sync.rs), with synchronous mode on and off, then a table per fault:
//! rounds, faults injected, failovers, the longest write gap, acknowledged rows lost and the
//! longest time two members acknowledged writes at once. Prints figures and each failing
//! round's reasons; exits non-zero when a round failed or could not inject its fault.
//!
//!     cargo run --release -p tusk-local --bin tusk-chaos -- \
//!         [--rounds N] [--faults kill-primary,freeze-patroni,...] [--synchronous on|off|both]
//!
//! One fresh 3-member cluster (examples/02-hippo-ha.yaml, ttl 10 s, no backups) per fault and
//! mode, on 127.45.{20..}.x, in a directory under the system temp dir; it starts, signals and
//! stops only the processes that cluster recorded. Needs the Debian packages `tusk local`
//! needs.

#[path = "../../tests/common/chaos.rs"]
mod chaos;
#[path = "../../tests/common/ha.rs"]
mod ha;
#[path = "../../tests/common/ledger.rs"]
mod ledger;

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use chaos::{Fault, Round};

const USAGE: &str =
    "usage: tusk-chaos [--rounds N] [--faults NAME,...] [--synchronous on|off|both]";

struct Options {
    rounds: u32,
    faults: Vec<Fault>,
    modes: Vec<bool>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        rounds: 1,
        faults: Fault::ALL.to_vec(),
        modes: vec![true, false],
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--rounds" => {
                options.rounds = value
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("--rounds: {value:?} is not a number >= 1"))?
            }
            "--faults" => {
                options.faults = value
                    .split(',')
                    .map(|name| {
                        Fault::parse(name).ok_or_else(|| {
                            let known: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                            format!(
                                "--faults: unknown fault {name:?} (known: {})",
                                known.join(", ")
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
            "--synchronous" => {
                options.modes = match value.as_str() {
                    "on" => vec![true],
                    "off" => vec![false],
                    "both" => vec![true, false],
                    other => {
                        return Err(format!("--synchronous: {other:?} is not on, off or both"))
                    }
                }
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(options)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    std::env::set_var("TUSK_HA_QUIET", "1");
    clean_up_when_interrupted();
    let mut rows = Vec::new();
    let mut failed = false;
    let mut network = 20;
    for synchronous in &options.modes {
        for fault in &options.faults {
            let rounds = run(*fault, *synchronous, options.rounds, network);
            network += 1;
            for (n, round) in rounds.iter().enumerate() {
                let failures = round.failures();
                if !failures.is_empty() {
                    failed = true;
                    eprintln!(
                        "FAILED {} (synchronous {}) round {}: {}",
                        fault.name(),
                        on_off(*synchronous),
                        n + 1,
                        failures.join("; ")
                    );
                }
            }
            rows.push((*fault, *synchronous, rounds));
        }
    }
    println!();
    println!(
        "{:<18} {:>5} {:>6} {:>8} {:>9} {:>12} {:>12} {:>15}",
        "fault",
        "sync",
        "rounds",
        "injected",
        "failovers",
        "max gap s",
        "lost/acked",
        "double prim. s"
    );
    for (fault, synchronous, rounds) in &rows {
        let injected = rounds.iter().filter(|r| r.not_injected.is_none()).count();
        let failovers = rounds.iter().filter(|r| r.failover).count();
        let gap = rounds.iter().map(|r| r.write_gap).max().unwrap_or_default();
        let lost: usize = rounds.iter().map(|r| r.verdict.lost.len()).sum();
        let acked: usize = rounds.iter().map(|r| r.verdict.acknowledged).sum();
        let double = rounds
            .iter()
            .map(|r| r.verdict.double_primary)
            .max()
            .unwrap_or(Duration::ZERO);
        println!(
            "{:<18} {:>5} {:>6} {:>8} {:>9} {:>12.1} {:>12} {:>15.1}",
            fault.name(),
            on_off(*synchronous),
            rounds.len(),
            injected,
            failovers,
            gap.as_secs_f64(),
            format!("{lost}/{acked}"),
            double.as_secs_f64()
        );
    }
    if failed {
        std::process::exit(1);
    }
}

fn on_off(synchronous: bool) -> &'static str {
    if synchronous {
        "on"
    } else {
        "off"
    }
}

/// `rounds` rounds of `fault` on one fresh cluster on 127.45.`network`.x.
fn run(fault: Fault, synchronous: bool, rounds: u32, network: u32) -> Vec<Round> {
    eprintln!(
        "{} (synchronous {}): {rounds} round(s)",
        fault.name(),
        on_off(synchronous)
    );
    let (cluster, file) = chaos::fault_cluster(&format!("127.45.{network}"), synchronous);
    (1..=rounds)
        .map(|n| {
            let round = chaos::run_round(&cluster, &file, fault, chaos::TTL);
            eprintln!(
                "  round {n}: failover {}, write gap {:.1}s, lost {}/{}, double primary {:.1}s{}",
                round.failover,
                round.write_gap.as_secs_f64(),
                round.verdict.lost.len(),
                round.verdict.acknowledged,
                round.verdict.double_primary.as_secs_f64(),
                round
                    .not_injected
                    .as_ref()
                    .map(|r| format!(" (not injected: {r})"))
                    .unwrap_or_default()
            );
            round
        })
        .collect()
}

/// The interrupt signal received, 0 while none.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_interrupt(signal: i32) {
    INTERRUPTED.store(signal, Ordering::SeqCst);
}

/// On SIGINT, SIGTERM or SIGHUP: resumes and stops every process of the clusters this run
/// made (found by their directories, named after this process), removes them, and exits.
/// The handler only notes the signal; a watcher thread does the work. (A handler, not a
/// blocked signal mask: the mask would be inherited by every server the run starts.)
fn clean_up_when_interrupted() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(note_interrupt),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // Safety: the handler only stores into an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.expect("installing the interrupt handler");
    }
    std::thread::spawn(|| {
        let signal = loop {
            match INTERRUPTED.load(Ordering::SeqCst) {
                0 => std::thread::sleep(Duration::from_millis(100)),
                signal => break signal,
            }
        };
        eprintln!("signal {signal}: stopping this run's clusters");
        let mine = format!("-{}-", std::process::id());
        let roots: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with("tusk-ha-") && name.contains(&mine))
            })
            .collect();
        for root in roots {
            let state = root.join("state");
            // A frozen process takes no SIGTERM: resume everything of the cluster first.
            for pid in processes_under(&state) {
                tusk_local::system::signal(pid, Signal::SIGCONT);
            }
            let layout = tusk_local::state::Layout::new(&state);
            if let Err(e) = tusk_local::down(&layout, false, &mut |_| {}) {
                eprintln!("stopping {}: {e}", state.display());
            }
            let _ = std::fs::remove_dir_all(&root);
        }
        std::process::exit(128 + signal);
    });
}

/// Pids whose command line names a path under `dir`.
fn processes_under(dir: &std::path::Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
        })
        .collect()
}
