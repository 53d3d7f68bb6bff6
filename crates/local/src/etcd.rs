//! etcd, Patroni's DCS in local mode: one member on `<network>.1`, client port 2379 and peer
//! port 2380, data under `<state>/etcd`. Touches that directory and the etcd process.

use std::process::Command;
use std::time::Duration;

use crate::error::{io, Result};
use crate::state::{Layout, Network};
use crate::system::{self, RunAs};

pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;
/// Patroni's default key namespace.
const PATRONI_NAMESPACE: &str = "/service";
const START_LIMIT: Duration = Duration::from_secs(60);

/// `host:port` Patroni and `tusk` use.
pub fn client_endpoint(network: &Network) -> String {
    format!("{}:{CLIENT_PORT}", network.etcd_host())
}

fn marker(layout: &Layout) -> String {
    layout
        .etcd_dir()
        .join("data")
        .to_string_lossy()
        .into_owned()
}

/// etcd's pid when it runs.
pub fn pid(layout: &Layout) -> Option<u32> {
    system::read_pid(&layout.etcd_dir().join("etcd.pid"))
        .filter(|pid| system::alive(*pid, &marker(layout)))
}

/// Starts etcd unless it runs, then waits until its client port accepts connections.
pub fn ensure_running(layout: &Layout, network: &Network, run_as: &RunAs) -> Result<()> {
    let dir = layout.etcd_dir();
    let log = dir.join("etcd.log");
    if pid(layout).is_none() {
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        run_as.own_tree(&dir)?;
        let host = network.etcd_host();
        let client = format!("http://{host}:{CLIENT_PORT}");
        let peer = format!("http://{host}:{PEER_PORT}");
        let mut command = Command::new(system::find_program("etcd"));
        command
            .args(["--name", "tusk", "--data-dir", &marker(layout)])
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("tusk={peer}")])
            // Metrics would otherwise listen on the client URLs too; nothing else opens.
            .args(["--log-level", "warn"]);
        system::ensure_port_free("etcd", &client_endpoint(network))?;
        system::spawn_detached("etcd", command, &log, &dir.join("etcd.pid"), run_as)?;
    }
    system::wait_listening("etcd", &client_endpoint(network), &log, START_LIMIT, || {
        pid(layout).is_some()
    })
}

/// Removes a departed member's key so Patroni forgets it at once (and the leader drops its
/// replication slot) instead of after the key's TTL.
pub fn forget_member(network: &Network, scope: &str, member: &str) -> Result<()> {
    crate::patroni_api::etcd_delete(
        &client_endpoint(network),
        &format!("{PATRONI_NAMESPACE}/{scope}/members/{member}"),
    )
}

/// Replaces everything Patroni keeps for `scope` (initialize key, leader, history,
/// members) by `dynamic_configuration` alone: the next Patroni to start takes its data
/// directory over as a new cluster with that configuration (Patroni writes `bootstrap.dcs`
/// only when it bootstraps an empty directory). Used by an in-place restore, whose data is
/// older than what the old keys describe.
pub fn reset_cluster(network: &Network, scope: &str, dynamic_configuration: &str) -> Result<()> {
    let endpoint = client_endpoint(network);
    crate::patroni_api::etcd_delete_prefix(&endpoint, &format!("{PATRONI_NAMESPACE}/{scope}/"))?;
    crate::patroni_api::etcd_put(
        &endpoint,
        &format!("{PATRONI_NAMESPACE}/{scope}/config"),
        dynamic_configuration,
    )
}

pub fn stop(layout: &Layout) {
    if let Some(pid) = pid(layout) {
        system::terminate(pid, &marker(layout), Duration::from_secs(30));
    }
}
