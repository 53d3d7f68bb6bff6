//! The leader lease in etcd (`tusk local`): the key `/service/<scope>/leader`, whose value is
//! the holder's name, in the API Patroni uses. v2 reports the key's remaining TTL; v3 keeps it
//! on the key's lease. Both round the remaining time up to whole seconds.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::policy::LeaseRead;
use crate::LeaseSource;

/// Which of etcd's APIs the keys are in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    V2,
    V3,
}

pub struct EtcdLease {
    pub agent: ureq::Agent,
    /// `host:port` of etcd's client URL (plain HTTP).
    pub endpoint: String,
    pub api: Api,
    /// `/service/<scope>/leader`.
    pub key: String,
    pub member: String,
}

impl LeaseSource for EtcdLease {
    fn read(&self) -> LeaseRead {
        let sent = Instant::now();
        let read = match self.api {
            Api::V2 => self.read_v2(),
            Api::V3 => self.read_v3(),
        };
        match read {
            Some(Some((holder, remaining))) if holder == self.member => LeaseRead::Mine {
                sent,
                // Rounded up by etcd: take the second off, so the estimate errs early.
                remaining: remaining.saturating_sub(Duration::from_secs(1)),
            },
            Some(Some((holder, _))) => LeaseRead::NotMine {
                holder: Some(holder),
            },
            Some(None) => LeaseRead::NotMine { holder: None },
            None => LeaseRead::Unknown,
        }
    }
}

impl EtcdLease {
    /// `Some(None)` when there is no key, `None` when etcd did not answer usefully.
    fn read_v2(&self) -> Option<Option<(String, Duration)>> {
        let url = format!("http://{}/v2/keys{}", self.endpoint, self.key);
        let mut response = self.agent.get(&url).call().ok()?;
        if response.status() == 404 {
            return Some(None);
        }
        if !response.status().is_success() {
            return None;
        }
        let body: Value = response.body_mut().read_json().ok()?;
        let node = &body["node"];
        let holder = node["value"].as_str()?.to_string();
        let ttl = node["ttl"].as_u64()?;
        Some(Some((holder, Duration::from_secs(ttl))))
    }

    fn read_v3(&self) -> Option<Option<(String, Duration)>> {
        let engine = base64::engine::general_purpose::STANDARD;
        let range = self.v3("kv/range", json!({ "key": engine.encode(&self.key) }))?;
        let Some(kv) = range["kvs"].as_array().and_then(|kvs| kvs.first()) else {
            return Some(None);
        };
        let holder = String::from_utf8(engine.decode(kv["value"].as_str()?).ok()?).ok()?;
        let lease = self.v3("lease/timetolive", json!({ "ID": kv["lease"].as_str()? }))?;
        // The gateway writes int64s as strings; -1 is an expired lease.
        let ttl = match &lease["TTL"] {
            Value::String(s) => s.parse::<i64>().ok()?,
            other => other.as_i64()?,
        };
        Some(Some((holder, Duration::from_secs(ttl.max(0) as u64))))
    }

    fn v3(&self, call: &str, body: Value) -> Option<Value> {
        let url = format!("http://{}/v3/{call}", self.endpoint);
        let mut response = self.agent.post(&url).send_json(body).ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.body_mut().read_json().ok()
    }
}
