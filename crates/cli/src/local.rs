//! `tusk local ...`: runs a PostgresCluster manifest as local processes through the
//! `tusk_local` runtime. Argument parsing and printing only (`psql` replaces this process
//! with the real psql).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use tusk_local::backup::{self, BackupKind};
use tusk_local::restore::RestoreOptions;
use tusk_local::state::resolve_state_dir;
use tusk_local::{Layout, UpOptions};

#[derive(Args)]
pub struct LocalArgs {
    #[command(subcommand)]
    command: LocalCommand,
}

/// Where the cluster's state is: `--state-dir`, or `./.tusk/<name>` of `-f FILE`, or the
/// only cluster under `./.tusk`.
#[derive(Args)]
struct Target {
    /// State directory of the cluster.
    #[arg(long = "state-dir")]
    state_dir: Option<PathBuf>,
    /// The cluster's manifest (only its name is used to find the state directory).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
}

impl Target {
    fn layout(&self) -> anyhow::Result<Layout> {
        Ok(Layout::new(resolve_state_dir(
            self.state_dir.as_deref(),
            self.file.as_deref(),
        )?))
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Create or update the cluster and wait until it is ready (a leader, every replica
    /// streaming).
    Up {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// State directory (default `./.tusk/<cluster>`).
        #[arg(long = "state-dir")]
        state_dir: Option<PathBuf>,
        /// First three octets of the loopback addresses (etcd on .1, members on .2 and up).
        #[arg(long)]
        network: Option<String>,
        /// Seconds each wait (primary initialised, replicas streaming) may take.
        #[arg(long, default_value_t = 300)]
        wait_seconds: u64,
    },
    /// Members, roles, states, timelines, lag and pids.
    Status {
        #[command(flatten)]
        target: Target,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
    /// Stop every process (replicas, primary, then etcd).
    Down {
        #[command(flatten)]
        target: Target,
        /// Also delete the state directory (data, certificates, logs).
        #[arg(long)]
        purge: bool,
    },
    /// Planned switchover to MEMBER (or any healthy replica).
    Switchover {
        #[command(flatten)]
        target: Target,
        #[arg(long = "to")]
        to: Option<String>,
        #[arg(long, default_value_t = 300)]
        wait_seconds: u64,
    },
    /// Print the log of MEMBER (or of etcd and every member).
    Logs {
        #[command(flatten)]
        target: Target,
        member: Option<String>,
    },
    /// Run one member's fencer (started by `up` beside each member's Patroni; not for
    /// people): kills the member's PostgreSQL when it serves as a primary past its lease.
    #[command(hide = true)]
    Fence {
        /// The member's fencer.json.
        config: PathBuf,
    },
    /// Print the cluster's CA certificate (PEM) for clients' sslrootcert.
    Ca {
        #[command(flatten)]
        target: Target,
    },
    /// Print the keys of the Kubernetes `<cluster>-pguser-<USER>` Secret: user password
    /// verifier dbname host port uri jdbc-uri (+ pgbouncer-host pgbouncer-port pgbouncer-uri
    /// pgbouncer-jdbc-uri with PgBouncer).
    Secret {
        #[command(flatten)]
        target: Target,
        /// A user of spec.users.
        user: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
    /// Take a pgBackRest backup of the primary (default: the `--type` of
    /// spec.backups.pgbackrest.manual.options, else full; into manual.repoName, else the first
    /// repo). pgBackRest then expires backups beyond `repoN-retention-full`.
    Backup {
        #[command(flatten)]
        target: Target,
        #[arg(long = "type", value_enum)]
        kind: Option<BackupType>,
        /// Repository number (1-4).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=4))]
        repo: Option<u8>,
    },
    /// List the backups of every repository.
    Backups {
        #[command(flatten)]
        target: Target,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
    /// Point-in-time restore IN PLACE: everything committed after TIME is lost on every
    /// member. Archives the WAL up to now, stops the cluster, restores the primary, starts
    /// it on a new timeline, takes a full backup and re-creates the replicas from it.
    Restore {
        #[command(flatten)]
        target: Target,
        /// Time to restore to, e.g. "2024-05-01 10:15:00+00" (default: what
        /// spec.backups.pgbackrest.restore.options say).
        #[arg(long = "target")]
        time: Option<String>,
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=4))]
        repo: Option<u8>,
        #[arg(long, default_value_t = 300)]
        wait_seconds: u64,
    },
    /// Run psql on the primary: the superuser over its Unix socket, or `--user U` with its
    /// password over TLS (verify-full). Arguments after `--` go to psql.
    Psql {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        user: Option<String>,
        #[arg(last = true)]
        psql_args: Vec<OsString>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BackupType {
    Full,
    Diff,
    Incr,
}

impl From<BackupType> for BackupKind {
    fn from(kind: BackupType) -> BackupKind {
        match kind {
            BackupType::Full => BackupKind::Full,
            BackupType::Diff => BackupKind::Diff,
            BackupType::Incr => BackupKind::Incr,
        }
    }
}

/// The Secret's keys in the order the Kubernetes documentation lists them.
/// The `pgbouncer-*` keys are there only when the spec has PgBouncer.
const SECRET_KEYS: [&str; 12] = [
    "user",
    "password",
    "verifier",
    "dbname",
    "host",
    "port",
    "uri",
    "jdbc-uri",
    "pgbouncer-host",
    "pgbouncer-port",
    "pgbouncer-uri",
    "pgbouncer-jdbc-uri",
];

fn progress(line: &str) {
    eprintln!("==> {line}");
}

pub fn run(args: LocalArgs) -> anyhow::Result<()> {
    match args.command {
        LocalCommand::Up {
            file,
            state_dir,
            network,
            wait_seconds,
        } => {
            let options = UpOptions {
                manifest: file,
                state_dir,
                network,
                wait_limit: Duration::from_secs(wait_seconds),
            };
            Ok(tusk_local::up(&options, &mut progress)?)
        }
        LocalCommand::Status { target, output } => {
            let report = tusk_local::status(&target.layout()?)?;
            let text = match output {
                Output::Json => serde_json::to_string_pretty(&report)? + "\n",
                Output::Table => tusk_local::render_table(&report),
            };
            crate::print_stdout(&text)
        }
        LocalCommand::Down { target, purge } => {
            Ok(tusk_local::down(&target.layout()?, purge, &mut progress)?)
        }
        LocalCommand::Switchover {
            target,
            to,
            wait_seconds,
        } => {
            let leader = tusk_local::switchover(
                &target.layout()?,
                to.as_deref(),
                Duration::from_secs(wait_seconds),
                &mut progress,
            )?;
            crate::print_stdout(&format!("{leader}\n"))
        }
        LocalCommand::Logs { target, member } => {
            crate::print_stdout(&tusk_local::logs(&target.layout()?, member.as_deref())?)
        }
        LocalCommand::Fence { config } => Ok(tusk_local::fencer::run(&config)?),
        LocalCommand::Ca { target } => crate::print_stdout(&tusk_local::ca_pem(&target.layout()?)?),
        LocalCommand::Secret {
            target,
            user,
            output,
        } => {
            let secret = tusk_local::secret(&target.layout()?, &user)?;
            let text = match output {
                Output::Json => secret.to_json() + "\n",
                Output::Table => {
                    let map = secret.to_map();
                    SECRET_KEYS
                        .iter()
                        .filter_map(|key| map.get(key).map(|value| format!("{key:<18} {value}\n")))
                        .collect()
                }
            };
            crate::print_stdout(&text)
        }
        LocalCommand::Backup { target, kind, repo } => {
            let layout = target.layout()?;
            let kind = match kind {
                Some(kind) => kind.into(),
                None => {
                    let (_, cluster) = tusk_local::up::load_manifest(&layout.manifest())?;
                    backup::default_kind(&cluster)
                }
            };
            let info = backup::run_backup(&layout, kind, repo, &mut progress)?;
            crate::print_stdout(&format!("{}\n", info.label))
        }
        LocalCommand::Backups { target, output } => {
            let backups = backup::list_backups(&target.layout()?)?;
            let text = match output {
                Output::Json => serde_json::to_string_pretty(&backups)? + "\n",
                Output::Table => backup::render_backups(&backups),
            };
            crate::print_stdout(&text)
        }
        LocalCommand::Restore {
            target,
            time,
            repo,
            wait_seconds,
        } => {
            let options = RestoreOptions {
                target: time,
                repo,
                wait_limit: Duration::from_secs(wait_seconds),
            };
            let leader =
                tusk_local::restore::restore_in_place(&target.layout()?, &options, &mut progress)?;
            crate::print_stdout(&format!("{leader}\n"))
        }
        LocalCommand::Psql {
            target,
            user,
            psql_args,
        } => {
            use std::os::unix::process::CommandExt;
            let mut command =
                tusk_local::psql_command(&target.layout()?, user.as_deref(), &psql_args)?;
            // exec: psql owns the terminal and its exit status is ours.
            let error = command.exec();
            Err(anyhow::anyhow!(
                "running {:?}: {error}",
                command.get_program()
            ))
        }
    }
}
