//! `tusk fence`: the member fencer ([`tusk_fence`]) in a container of an instance pod. It
//! reads the member's leader lease from the Endpoints Patroni's Kubernetes DCS keeps (with
//! the pod's service account), asks the member's Patroni on the pod's loopback, and kills the
//! member's PostgreSQL through the pod's shared process namespace when the lease can no
//! longer be valid. The operator renders the container (`build::fencer`).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use tusk_fence::kubernetes::EndpointsLease;
use tusk_fence::policy::FencePolicy;
use tusk_fence::{Guard, PatroniRest};

#[derive(Args)]
pub struct FenceArgs {
    /// The member: the pod's name (Patroni's member name).
    #[arg(long, env = "PATRONI_NAME")]
    member: String,
    #[arg(long, env = "PATRONI_KUBERNETES_NAMESPACE")]
    namespace: String,
    /// Patroni's scope: the name of the Endpoints holding the leader lease.
    #[arg(long)]
    scope: String,
    /// PostgreSQL's data directory (its `postmaster.pid` and signal files).
    #[arg(long)]
    data_dir: PathBuf,
    /// Patroni's REST API port on the pod's loopback.
    #[arg(long)]
    patroni_port: u16,
    /// Patroni's `ttl` and `loop_wait` (seconds), for the margin.
    #[arg(long)]
    ttl: u32,
    #[arg(long)]
    loop_wait: u32,
}

pub fn run(args: FenceArgs) -> anyhow::Result<()> {
    let lease = EndpointsLease::in_cluster(&args.namespace, &args.scope, &args.member)
        .map_err(anyhow::Error::msg)?;
    // Patroni's own status on the pod's loopback. Its certificate names the pod's DNS names,
    // not 127.0.0.1, so it is not verified: the answer only ever spares a primary Patroni says
    // serves in failsafe mode, and nothing but this pod can listen on its loopback.
    let tls = ureq::tls::TlsConfig::builder()
        .disable_verification(true)
        .build();
    let patroni = PatroniRest {
        agent: tusk_fence::agent(Some(tls)),
        url: format!("https://127.0.0.1:{}/patroni", args.patroni_port),
    };
    let policy = FencePolicy::for_timings(args.ttl, args.loop_wait);
    let mut guard = Guard::new(
        args.member.clone(),
        args.data_dir,
        policy,
        Box::new(lease),
        Box::new(patroni),
    );
    tusk_fence::log(&format!(
        "{}(lease margin {} ms, Endpoints {}/{})",
        Guard::guarding_line(&args.member),
        policy.margin.as_millis(),
        args.namespace,
        args.scope
    ));
    loop {
        let started = Instant::now();
        if let Some(fenced) = guard.poll() {
            tusk_fence::log(&fenced);
        }
        std::thread::sleep(tusk_fence::POLL.saturating_sub(started.elapsed()));
    }
}
