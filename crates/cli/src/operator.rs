//! `tusk operator`: command-line flags (each with an environment variable, as a Deployment
//! sets them), JSON logs, the tokio runtime, then `tusk_operator::run::run`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tusk_operator::leader::LeaseConfig;
use tusk_operator::run::{Namespaces, OperatorConfig};

#[derive(Args, Debug)]
pub struct OperatorArgs {
    /// Namespaces to watch: one, a comma-separated list, or empty / `*` for all.
    #[arg(long, env = "WATCH_NAMESPACE", default_value = "")]
    namespaces: String,
    /// Clusters reconciled at the same time.
    #[arg(long, env = "TUSK_CONCURRENCY", default_value_t = 4)]
    concurrency: u16,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "TUSK_HTTP_ADDRESS", default_value = "0.0.0.0:8080")]
    http_address: SocketAddr,
    /// Namespace of the leader-election Lease (default: the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    #[arg(long, env = "TUSK_LEASE_NAME", default_value = "tusk-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (default: the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a leader's Lease stays valid without renewal.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..))]
    lease_duration_seconds: u64,
}

pub fn run(args: OperatorArgs) -> anyhow::Result<()> {
    init_json_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API")?;
        let lease_namespace = args
            .lease_namespace
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let identity = args.identity.unwrap_or_else(default_identity);
        let lease_duration = Duration::from_secs(args.lease_duration_seconds);
        let config = OperatorConfig {
            namespaces: Namespaces::parse(&args.namespaces),
            concurrency: args.concurrency.max(1),
            http_address: args.http_address,
            lease: LeaseConfig {
                namespace: lease_namespace,
                name: args.lease_name,
                identity,
                lease_duration,
                // Several attempts fit in the renew deadline (2/3 of the lease).
                retry_period: lease_duration / 7,
            },
        };
        tracing::info!(?config, "starting the operator");
        tusk_operator::run::run(client, config).await?;
        Ok(())
    })
}

/// JSON lines on stdout; the level comes from `RUST_LOG` (default `info`).
fn init_json_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .init();
}

/// The host name (a pod's name in Kubernetes), or a random identity when it is unknown, so
/// two replicas never share one.
fn default_identity() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("tusk-{:08x}", rand::random::<u32>()))
}
