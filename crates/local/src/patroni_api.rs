//! Patroni's REST API over HTTPS (verified against the local CA, presenting the admin client
//! certificate that `verify_client: optional` demands for state-changing calls). Touches the
//! network only.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tusk_config::merge::same_setting;
use tusk_config::paths::{TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE};
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

use crate::error::{io, Error, Result};
use crate::state::Layout;

/// How long an idempotent request is sent again after its connection was reset: Patroni's
/// REST server restarting its TLS takes well under a second.
const RESET_RETRY: Duration = Duration::from_secs(5);

/// A member as Patroni's `/cluster` reports it.
#[derive(Clone, Debug, Deserialize)]
pub struct ClusterMember {
    pub name: String,
    pub role: String,
    pub state: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    #[serde(default)]
    pub timeline: Option<u64>,
    /// Bytes behind the leader; Patroni reports a string ("unknown") when it cannot tell.
    #[serde(default)]
    pub lag: Option<Value>,
    #[serde(default)]
    pub pending_restart: bool,
}

impl ClusterMember {
    /// The leader of the cluster: a primary, or the standby leader of a standby cluster
    /// (which leads its members while following a remote source).
    pub fn is_leader(&self) -> bool {
        matches!(self.role.as_str(), "leader" | "master" | "standby_leader")
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct ClusterView {
    pub members: Vec<ClusterMember>,
}

impl ClusterView {
    pub fn leader(&self) -> Option<&ClusterMember> {
        self.members.iter().find(|m| m.is_leader())
    }
}

/// HTTPS client for every member's REST API.
pub struct PatroniApi {
    agent: ureq::Agent,
    port: u16,
}

impl PatroniApi {
    pub fn new(layout: &Layout, port: u16) -> Result<PatroniApi> {
        PatroniApi::with_timeout(layout, port, Duration::from_secs(10))
    }

    /// A client whose every request gives up after `timeout`.
    pub fn with_timeout(layout: &Layout, port: u16, timeout: Duration) -> Result<PatroniApi> {
        let dir = layout.admin_tls_dir();
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read(&path).map_err(io("reading", path))
        };
        let bad_pem = |what: &str, e: ureq::Error| Error::Http {
            what: format!("loading {what} from {}", dir.display()),
            reason: e.to_string(),
        };
        // Every root of the bundle: during a CA rollover members serve leaves of either.
        let ca_bundle = read(TLS_CA_FILE)?;
        let roots = ureq::tls::parse_pem(&ca_bundle)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad_pem("CA", e))?;
        let cert =
            Certificate::from_pem(&read(TLS_CERT_FILE)?).map_err(|e| bad_pem("certificate", e))?;
        let key = PrivateKey::from_pem(&read(TLS_KEY_FILE)?).map_err(|e| bad_pem("key", e))?;
        crate::tls::install_crypto_provider();
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(&roots))
            .client_cert(Some(ClientCert::new_with_certs(&[cert], key)))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            // Loopback traffic must never go through an HTTP(S)_PROXY from the environment.
            .proxy(None)
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Ok(PatroniApi { agent, port })
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port)
    }

    fn request(&self, method: &str, host: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = self.url(host, path);
        let fail = |reason: String| Error::Http {
            what: format!("{method} {url}"),
            reason,
        };
        let send = || match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("PATCH", Some(b)) => self.agent.patch(&url).send_json(b),
            ("POST", Some(b)) => self.agent.post(&url).send_json(b),
            ("POST", None) => self.agent.post(&url).send_empty(),
            _ => unreachable!("unsupported request shape"),
        };
        // Patroni's REST server restarts its TLS listener after a certificate reload and resets
        // the connections it had meanwhile (CI met it in local_tls's root rollover). GET and
        // PATCH /config (a merge patch) are idempotent, so a reset one is sent again for a
        // moment; a POST (switchover, restart) never is, and a refused connection (a member
        // that is down) fails at once.
        let idempotent = matches!(method, "GET" | "PATCH");
        let deadline = std::time::Instant::now() + RESET_RETRY;
        let mut response = loop {
            match send() {
                Ok(response) => break response,
                Err(ureq::Error::Io(e))
                    if idempotent
                        && e.kind() == std::io::ErrorKind::ConnectionReset
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(fail(e.to_string())),
            }
        };
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}: {}", text.trim())));
        }
        // Some endpoints answer plain text ("Successfully switched over ...").
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// `GET /patroni`: the member's own status (role, state, failsafe mode).
    pub fn status(&self, host: &str) -> Result<Value> {
        self.request("GET", host, "/patroni", None)
    }

    /// `GET /cluster` as seen by the member at `host`.
    pub fn cluster(&self, host: &str) -> Result<ClusterView> {
        let value = self.request("GET", host, "/cluster", None)?;
        serde_json::from_value(value).map_err(|e| Error::Http {
            what: format!("parsing {}", self.url(host, "/cluster")),
            reason: e.to_string(),
        })
    }

    /// `GET /config`: the dynamic configuration in the DCS.
    pub fn config(&self, host: &str) -> Result<Value> {
        self.request("GET", host, "/config", None)
    }

    /// `PATCH /config` with a JSON merge patch (`null` deletes a key).
    pub fn patch_config(&self, host: &str, patch: &Value) -> Result<()> {
        self.request("PATCH", host, "/config", Some(patch))
            .map(drop)
    }

    /// `POST /switchover` from `leader` to `candidate` (any healthy member when `None`).
    pub fn switchover(&self, host: &str, leader: &str, candidate: Option<&str>) -> Result<()> {
        let mut body = json!({ "leader": leader });
        if let Some(candidate) = candidate {
            body["candidate"] = json!(candidate);
        }
        self.request("POST", host, "/switchover", Some(&body))
            .map(drop)
    }

    /// `POST /restart` of the member at `host` (restarts its PostgreSQL).
    pub fn restart(&self, host: &str) -> Result<()> {
        self.request("POST", host, "/restart", Some(&json!({})))
            .map(drop)
    }
}

/// The JSON merge patch (RFC 7386, what Patroni's PATCH /config applies) turning `current`
/// into `desired`: changed values replaced, vanished keys set to `null`.
pub fn merge_patch(current: &Value, desired: &Value) -> Option<Value> {
    match (current, desired) {
        (Value::Object(cur), Value::Object(want)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in want {
                match cur.get(key) {
                    Some(existing) => {
                        if let Some(p) = merge_patch(existing, value) {
                            patch.insert(key.clone(), p);
                        }
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in cur.keys().filter(|k| !want.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        (cur, want) if same_setting(cur, want) => None,
        (_, want) => Some(want.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_replaces_changes_and_nulls_removed_keys() {
        let current =
            json!({"ttl": 15, "postgresql": {"parameters": {"work_mem": "2MB", "old": "1"}}});
        let desired =
            json!({"ttl": "15", "postgresql": {"parameters": {"work_mem": "4MB"}}, "new": true});
        assert_eq!(
            merge_patch(&current, &desired),
            Some(
                json!({"postgresql": {"parameters": {"work_mem": "4MB", "old": null}}, "new": true})
            )
        );
        assert_eq!(merge_patch(&desired, &desired), None);
    }
}
