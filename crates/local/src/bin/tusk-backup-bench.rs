//! Backup and restore benchmark for `tusk local` (issue 5): prints figures, asserts nothing.
//! Starts a 1-member cluster from examples/01-hippo-basic.yaml (a `volume` repo, Tusk's
//! pgBackRest defaults: zstd, async archiving), fills a pgbench database of `--scale` (70 is
//! about 1 GB), then in the same run measures:
//! - a full backup (`tusk local backup`), and `pg_basebackup` of the same server;
//! - restoring that backup into an empty directory (`pgbackrest restore`), next to the
//!   `pg_basebackup` copy: the data-copy part of seeding a replica either way;
//! - seeding a new replica end to end: `up` with a second member, which Patroni creates from
//!   the repo (`create_replica_methods: [pgbackrest, basebackup]`), next to the same on a
//!   second cluster of the same size without backups, where Patroni uses `pg_basebackup`.
//!
//! Runs as `cargo run --release -p tusk-local --bin tusk-backup-bench -- --scale 70`; needs
//! the Debian packages `tusk local` needs plus pgbench. Starts and stops only its own
//! clusters, on 127.48.2.x and 127.48.3.x, in directories under the system temp dir.

#[path = "../../tests/common/ha.rs"]
mod ha;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ha::{manifest, Cluster, ManifestEdit};
use tusk_config::paths::{TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE};
use tusk_local::backup::{run_backup, BackupKind};
use tusk_local::system::RunAs;

const USAGE: &str = "usage: tusk-backup-bench [--scale N]   (default 70, about 1 GB)";
const BIN: &str = "/usr/lib/postgresql/15/bin";

fn parse(args: &[String]) -> Result<u32, String> {
    match args {
        [] => Ok(70),
        [flag, value] if flag == "--scale" => value
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("--scale: {value:?} is not a number >= 1")),
        other => Err(format!("unexpected arguments {other:?}")),
    }
}

/// Runs `command` (as the server user when `tusk` is root), exits on failure.
fn run(what: &str, command: Command, run_as: &RunAs) -> Duration {
    let started = Instant::now();
    if let Err(e) = tusk_local::system::run_helper(what, command, Some(run_as)) {
        eprintln!("{what}: {e}");
        std::process::exit(1);
    }
    started.elapsed()
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

fn rate(bytes: u64, took: Duration) -> String {
    format!(
        "{:8.2} s  {:7.1} MB/s",
        took.as_secs_f64(),
        megabytes(bytes) / took.as_secs_f64()
    )
}

/// An empty directory the server user may write, inside the cluster's temp dir.
fn scratch(cluster: &Cluster, name: &str, run_as: &RunAs) -> std::path::PathBuf {
    let dir = cluster.state_dir.parent().unwrap().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    run_as.own_tree(&dir).unwrap();
    dir
}

/// `pgbench -i` of `scale` into `postgres`, as the superuser over the socket in `socket`.
fn pgbench_init(socket: &Path, scale: u32, run_as: &RunAs) -> Duration {
    eprintln!("pgbench -i -s {scale}");
    let mut init = Command::new("/usr/bin/pgbench");
    tusk_local::system::clear_libpq_env(&mut init);
    init.args(["-i", "-q", "-s", &scale.to_string(), "-U", "postgres", "-h"])
        .arg(socket)
        .arg("postgres");
    run("pgbench -i", init, run_as)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scale = match parse(&args) {
        Ok(scale) => scale,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let run_as = RunAs::detect().expect("the server user");
    let cluster = Cluster::new("127.48.2");
    let edit = ManifestEdit {
        replicas: Some(1),
        ..ManifestEdit::default()
    };
    let file = cluster.write_manifest(&manifest("01-hippo-basic.yaml", &edit));
    eprintln!("starting the cluster on {}", cluster.network);
    if let Err(e) = cluster.up(&file) {
        eprintln!("up: {e}");
        std::process::exit(1);
    }
    let leader = cluster.leader();
    let layout = cluster.layout();
    let member = layout.member(&leader);
    let socket = member.socket_dir();

    let init_took = pgbench_init(&socket, scale, &run_as);
    let size: u64 = cluster
        .superuser_sql(
            &leader,
            "SELECT sum(pg_database_size(datname))::bigint FROM pg_database",
        )
        .expect("database sizes")
        .parse()
        .expect("a number");

    eprintln!("full backup");
    let started = Instant::now();
    let backup = run_backup(&layout, BackupKind::Full, None, &mut |l| eprintln!("  {l}"))
        .expect("full backup");
    let backup_took = started.elapsed();

    eprintln!("pg_basebackup");
    let copy = scratch(&cluster, "basebackup", &run_as);
    let tls = member.replication_tls_dir();
    let conninfo = format!(
        "host={} port=5432 user={} sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
        cluster.host_of(&leader),
        tusk_api::naming::REPLICATION_USER,
        tls.join(TLS_CA_FILE).display(),
        tls.join(TLS_CERT_FILE).display(),
        tls.join(TLS_KEY_FILE).display(),
    );
    let mut basebackup = Command::new(Path::new(BIN).join("pg_basebackup"));
    tusk_local::system::clear_libpq_env(&mut basebackup);
    basebackup
        .args(["-X", "stream", "-c", "fast", "-d", &conninfo, "-D"])
        .arg(&copy);
    let basebackup_took = run("pg_basebackup", basebackup, &run_as);

    eprintln!("pgbackrest restore into an empty directory");
    let target = scratch(&cluster, "restore", &run_as);
    let mut restore = Command::new(tusk_local::system::find_program("pgbackrest"));
    restore
        .env("PGBACKREST_CONFIG", member.pgbackrest_conf())
        .args(["--stanza", tusk_config::parameters::PGBACKREST_STANZA])
        .arg(format!("--pg1-path={}", target.display()))
        .arg(format!("--set={}", backup.label))
        .arg("restore");
    let restore_took = run("pgbackrest restore", restore, &run_as);

    eprintln!("seeding a second member from the repo (up with 2 replicas)");
    let two = cluster.write_manifest(&manifest(
        "01-hippo-basic.yaml",
        &ManifestEdit {
            replicas: Some(2),
            ..ManifestEdit::default()
        },
    ));
    let started = Instant::now();
    if let Err(e) = cluster.up(&two) {
        eprintln!("up with 2 members: {e}");
        std::process::exit(1);
    }
    let seed_took = started.elapsed();

    eprintln!("the same without backups: a replica seeded by pg_basebackup");
    let plain = Cluster::new("127.48.3");
    let without = |replicas| ManifestEdit {
        replicas: Some(replicas),
        without_backups: true,
        ..ManifestEdit::default()
    };
    let one = plain.write_manifest(&manifest("01-hippo-basic.yaml", &without(1)));
    if let Err(e) = plain.up(&one) {
        eprintln!("up without backups: {e}");
        std::process::exit(1);
    }
    pgbench_init(
        &plain.layout().member(&plain.leader()).socket_dir(),
        scale,
        &run_as,
    );
    let two = plain.write_manifest(&manifest("01-hippo-basic.yaml", &without(2)));
    let started = Instant::now();
    if let Err(e) = plain.up(&two) {
        eprintln!("up with 2 members, no backups: {e}");
        std::process::exit(1);
    }
    let basebackup_seed_took = started.elapsed();

    println!(
        "pgbench scale {scale}: {:.0} MB in all databases (loaded in {:.1} s)",
        megabytes(size),
        init_took.as_secs_f64()
    );
    println!(
        "full backup (zstd, 1 process)        {}  -> {:.0} MB in the repo",
        rate(size, backup_took),
        megabytes(backup.repo_size)
    );
    println!(
        "pg_basebackup (-X stream)            {}",
        rate(size, basebackup_took)
    );
    println!(
        "pgbackrest restore (empty directory) {}",
        rate(size, restore_took)
    );
    println!(
        "new replica, `up` until it streams: from the repo {:.2} s, by pg_basebackup {:.2} s",
        seed_took.as_secs_f64(),
        basebackup_seed_took.as_secs_f64()
    );
}
