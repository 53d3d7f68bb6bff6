//! Connection-pooling benchmark for `tusk local` (issue 6): prints figures, asserts nothing.
//! Starts a 1-member cluster from examples/01-hippo-basic.yaml (`spec.backups` removed) with
//! PgBouncer in transaction pooling and a user `bench`, initialises pgbench's tables, then runs
//! `pgbench -C` (a new connection per transaction: TLS handshake and SCRAM every time) for N
//! seconds twice, in the same run: through PgBouncer, and directly to the primary. Both use
//! `sslmode=verify-full` against the local CA, so the only difference is the pooler.
//!
//! Runs as `cargo run --release -p tusk-local --bin tusk-pooler-bench -- --seconds 20`;
//! needs the Debian packages `tusk local` needs plus pgbench. Starts and stops only its own
//! cluster, on 127.48.1.x, in a directory under the system temp dir.

#[path = "../../tests/common/ha.rs"]
mod ha;

use std::process::Command;

use ha::{manifest, Cluster, ManifestEdit};
use serde_yaml::Value;

const USAGE: &str =
    "usage: tusk-pooler-bench [--seconds N] [--clients C]   (defaults: 20 s, 4 clients)";
const PGBENCH: &str = "/usr/bin/pgbench";
const POOLER_PORT: u16 = 6432;

struct Options {
    seconds: u32,
    clients: u32,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        seconds: 20,
        clients: 4,
    };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .ok_or_else(|| format!("{flag}: a value is needed"))?;
        let number = value
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("{flag}: {value:?} is not a number >= 1"))?;
        match flag.as_str() {
            "--seconds" => options.seconds = number,
            "--clients" => options.clients = number,
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(options)
}

/// examples/01 without backups, plus PgBouncer (transaction pooling) and the `bench` user.
fn bench_manifest() -> String {
    let edit = ManifestEdit {
        without_backups: true,
        ..ManifestEdit::default()
    };
    let mut doc: Value = serde_yaml::from_str(&manifest("01-hippo-basic.yaml", &edit)).unwrap();
    let extra: Value = serde_yaml::from_str(&format!(
        "users: [{{name: bench, databases: [bench]}}]\n\
         proxy: {{pgBouncer: {{port: {POOLER_PORT}, config: {{global: {{pool_mode: transaction, \
         max_client_conn: '200', default_pool_size: '20'}}}}}}}}\n"
    ))
    .unwrap();
    for (key, value) in extra.as_mapping().unwrap() {
        doc["spec"][key.as_str().unwrap()] = value.clone();
    }
    serde_yaml::to_string(&doc).unwrap()
}

/// Runs pgbench as `bench` against `host:port` and returns its report.
fn pgbench(cluster: &Cluster, password: &str, host: &str, port: u16, args: &[&str]) -> String {
    let out = Command::new(PGBENCH)
        .env_clear()
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", cluster.ca_file())
        .args(["-h", host, "-p", &port.to_string(), "-U", "bench"])
        .args(args)
        .arg("bench")
        .output()
        .unwrap_or_else(|e| panic!("running {PGBENCH}: {e}"));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!(
            "pgbench {args:?} failed:\n{report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::process::exit(1);
    }
    report
}

/// A figure of pgbench's report, e.g. `tps` or `latency average`.
fn figure(report: &str, prefix: &str) -> String {
    report
        .lines()
        .find(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{prefix}: (not reported)"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let cluster = Cluster::new("127.48.1");
    let file = cluster.write_manifest(&bench_manifest());
    eprintln!("starting the cluster on {}", cluster.network);
    if let Err(e) = cluster.up(&file) {
        eprintln!("up: {e}");
        std::process::exit(1);
    }
    let secret = tusk_local::secret(&cluster.layout(), "bench").expect("secret of bench");
    let keys = secret.to_map();
    let pooler_host = keys["pgbouncer-host"].clone();
    let primary_host = cluster.host_of(&cluster.leader());

    pgbench(
        &cluster,
        &secret.password,
        &primary_host,
        5432,
        &["-i", "-s", "10", "-q"],
    );
    let run = [
        "-C",
        "-n",
        "-S",
        "-c",
        &options.clients.to_string(),
        "-j",
        "2",
        "-T",
        &options.seconds.to_string(),
    ];
    let pooled = pgbench(&cluster, &secret.password, &pooler_host, POOLER_PORT, &run);
    let direct = pgbench(&cluster, &secret.password, &primary_host, 5432, &run);

    println!(
        "pgbench -C -S (new TLS+SCRAM connection per transaction), {} clients, {} s each",
        options.clients, options.seconds
    );
    for (label, report) in [
        (
            format!("through PgBouncer {pooler_host}:{POOLER_PORT}"),
            &pooled,
        ),
        (format!("direct to primary {primary_host}:5432"), &direct),
    ] {
        println!("{label}");
        println!("  {}", figure(report, "tps"));
        println!("  {}", figure(report, "latency average"));
        println!("  {}", figure(report, "average connection time"));
    }
}
