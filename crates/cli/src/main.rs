//! `tusk`: the operator, the CRD printer, the renderer, and (later) the local runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod fence;
mod local;
mod operator;
mod render;

#[derive(Parser)]
#[command(
    name = "tusk",
    version,
    about = "PostgreSQL on Kubernetes, and on your laptop"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Kubernetes operator (watches PostgresClusters until SIGTERM).
    Operator(operator::OperatorArgs),
    /// Print the PostgresCluster CustomResourceDefinition (YAML), for Kubernetes 1.28 and
    /// later unless `--without-cel`.
    Crd {
        /// The variant for Kubernetes 1.20 to 1.27: no CEL validation rules (the operator
        /// enforces them itself) and no `null` enum values (deploy/crds/without-cel/).
        #[arg(long)]
        without_cel: bool,
    },
    /// Print every Kubernetes object the operator would create for a manifest, on an empty
    /// namespace. Secrets carry placeholders, never real passwords or keys.
    Render {
        /// The PostgresCluster manifest.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Run a manifest as local processes: etcd, Patroni + PostgreSQL per instance on
    /// loopback addresses (up, status, down, switchover, logs, ca, secret, psql).
    Local(local::LocalArgs),
    /// Run an instance pod's member fencer (the operator renders this container; not for
    /// people): kills the member's PostgreSQL when it serves as a primary past its lease.
    #[command(hide = true)]
    Fence(fence::FenceArgs),
}

fn main() -> ExitCode {
    // kube's client and `tusk local`'s HTTP client take rustls's process-wide provider.
    tusk_local::tls::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd { without_cel: false } => print_stdout(&tusk_api::crd::crd_yaml()),
        Command::Crd { without_cel: true } => print_stdout(&tusk_api::crd::crd_yaml_without_cel()),
        Command::Render { file } => render::run(&file),
        Command::Operator(args) => operator::run(args),
        Command::Local(args) => local::run(args),
        Command::Fence(args) => fence::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to stdout; a closed pipe (`| head`) ends quietly instead of panicking.
pub(crate) fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
