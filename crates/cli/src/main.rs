//! `tusk`: the operator, the CRD printer, the renderer, and (later) the local runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Print the PostgresCluster CustomResourceDefinition (YAML).
    Crd,
    /// Print every Kubernetes object the operator would create for a manifest, on an empty
    /// namespace. Secrets carry placeholders, never real passwords or keys.
    Render {
        /// The PostgresCluster manifest.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => {
            print!("{}", tusk_api::crd::crd_yaml());
            Ok(())
        }
        Command::Render { file } => render::run(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
