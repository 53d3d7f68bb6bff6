//! etcd, Patroni's DCS in local mode: one member on `<network>.1`, client port 2379 and peer
//! port 2380, data under `<state>/etcd`, serving both its v3 and its v2 API (which one a
//! cluster's Patroni uses is recorded in its state: [`EtcdApi::for_patroni`]). Touches that
//! directory, the etcd process and the keys of the cluster's Patroni scope.

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tusk_config::patroni::EtcdApi;

use crate::error::{io, Error, Result};
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
            // Patroni before 3.0.3 is safe only on the v2 API (`EtcdApi::for_patroni`).
            .arg("--enable-v2=true")
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
pub fn forget_member(network: &Network, api: EtcdApi, scope: &str, member: &str) -> Result<()> {
    Keys::new(network, api).delete(&format!("{PATRONI_NAMESPACE}/{scope}/members/{member}"))
}

/// Replaces everything Patroni keeps for `scope` (initialize key, leader, history,
/// members) by `dynamic_configuration` alone: the next Patroni to start takes its data
/// directory over as a new cluster with that configuration (Patroni writes `bootstrap.dcs`
/// only when it bootstraps an empty directory). Used by an in-place restore, whose data is
/// older than what the old keys describe.
pub fn reset_cluster(
    network: &Network,
    api: EtcdApi,
    scope: &str,
    dynamic_configuration: &str,
) -> Result<()> {
    let keys = Keys::new(network, api);
    keys.delete_tree(&format!("{PATRONI_NAMESPACE}/{scope}"))?;
    keys.put(
        &format!("{PATRONI_NAMESPACE}/{scope}/config"),
        dynamic_configuration,
    )
}

/// The Patroni on this machine's `(major, minor, patch)`, from `patroni --version`.
pub fn installed_patroni() -> Result<(u32, u32, u32)> {
    let program = system::find_program("patroni");
    let out = Command::new(&program)
        .arg("--version")
        .output()
        .map_err(io("running", &program))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_patroni_version(&text).ok_or_else(|| Error::Command {
        what: format!("{} --version", program.display()),
        output: format!(
            "expected `patroni X.Y.Z`, got {:?}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

/// `patroni 3.0.2` -> `(3, 0, 2)`.
fn parse_patroni_version(text: &str) -> Option<(u32, u32, u32)> {
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Plain-HTTP key operations on the local etcd, in the key space of the API Patroni uses.
struct Keys {
    endpoint: String,
    api: EtcdApi,
    agent: ureq::Agent,
}

impl Keys {
    fn new(network: &Network, api: EtcdApi) -> Keys {
        Keys {
            endpoint: client_endpoint(network),
            api,
            agent: ureq::Agent::config_builder()
                .proxy(None)
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into(),
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        let what = format!("deleting etcd key {key}");
        match self.api {
            EtcdApi::V2 => self.v2(self.agent.delete(self.v2_url(key, "")).call(), &what),
            EtcdApi::V3 => self.v3(
                "deleterange",
                json!({ "key": encode(key.as_bytes()) }),
                &what,
            ),
        }
    }

    /// Deletes `dir` and every key under `dir/`.
    fn delete_tree(&self, dir: &str) -> Result<()> {
        let what = format!("deleting etcd keys {dir}/*");
        match self.api {
            EtcdApi::V2 => self.v2(
                self.agent
                    .delete(self.v2_url(dir, "?recursive=true"))
                    .call(),
                &what,
            ),
            EtcdApi::V3 => {
                // The range of every key starting with `dir/`: its last byte incremented.
                let prefix = format!("{dir}/");
                let mut end = prefix.as_bytes().to_vec();
                if let Some(last) = end.last_mut() {
                    *last += 1;
                }
                let body = json!({ "key": encode(prefix.as_bytes()), "range_end": encode(&end) });
                self.v3("deleterange", body, &what)
            }
        }
    }

    fn put(&self, key: &str, value: &str) -> Result<()> {
        let what = format!("writing etcd key {key}");
        match self.api {
            EtcdApi::V2 => self.v2(
                self.agent
                    .put(self.v2_url(key, ""))
                    .send_form([("value", value)]),
                &what,
            ),
            EtcdApi::V3 => {
                let body =
                    json!({ "key": encode(key.as_bytes()), "value": encode(value.as_bytes()) });
                self.v3("put", body, &what)
            }
        }
    }

    fn v2_url(&self, key: &str, query: &str) -> String {
        format!("http://{}/v2/keys{key}{query}", self.endpoint)
    }

    /// A v2 answer: success, or 404 (a key already gone is what a delete wants).
    fn v2(
        &self,
        response: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        what: &str,
    ) -> Result<()> {
        let fail = |reason: String| Error::Http {
            what: what.into(),
            reason,
        };
        let response = response.map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        if status.is_success() || status == 404 {
            Ok(())
        } else {
            Err(fail(format!("HTTP {status}")))
        }
    }

    /// One request to the v3 JSON gateway (`/v3/kv/<call>`).
    fn v3(&self, call: &str, body: Value, what: &str) -> Result<()> {
        let fail = |reason: String| Error::Http {
            what: what.into(),
            reason,
        };
        let response = self
            .agent
            .post(&format!("http://{}/v3/kv/{call}", self.endpoint))
            .send_json(body)
            .map_err(|e| fail(e.to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        Ok(())
    }
}

fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn stop(layout: &Layout) {
    if let Some(pid) = pid(layout) {
        system::terminate(pid, &marker(layout), Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patroni_versions_parse_from_its_version_line() {
        assert_eq!(parse_patroni_version("patroni 3.0.2\n"), Some((3, 0, 2)));
        assert_eq!(parse_patroni_version("patroni 4.1"), Some((4, 1, 0)));
        assert_eq!(parse_patroni_version("patroni"), None);
        assert_eq!(parse_patroni_version("patroni x.y"), None);
    }
}
