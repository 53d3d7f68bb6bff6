//! The leader lease in the Kubernetes API (the operator's pods): Patroni's Kubernetes DCS
//! with `use_endpoints` keeps it in annotations of the Endpoints named after its scope:
//! `leader` (the holder), `renewTime` (when the holder last renewed it, RFC 3339, written by
//! the holder's own clock) and `ttl` (seconds). Other members count a lease as expired `ttl`
//! after they last saw it change, which is never before `renewTime + ttl`: the fencer runs in
//! the holder's own pod, on the same clock as `renewTime`, so that bound is exact for it.
//!
//! Read with the pod's service account (the instance's, which Patroni uses too), through the
//! `kubernetes` Service like Patroni.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::policy::LeaseRead;
use crate::LeaseSource;

const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

pub struct EndpointsLease {
    agent: ureq::Agent,
    url: String,
    /// Re-read on every request: projected tokens are rotated by the kubelet.
    token_file: PathBuf,
    member: String,
}

impl EndpointsLease {
    /// The lease of Endpoints `namespace/name`, read with the pod's service account through
    /// `KUBERNETES_SERVICE_HOST`/`_PORT` (set in every container, service links or not).
    pub fn in_cluster(namespace: &str, name: &str, member: &str) -> Result<EndpointsLease, String> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| "KUBERNETES_SERVICE_HOST is not set: not in a pod".to_string())?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let account = PathBuf::from(SERVICE_ACCOUNT);
        let ca_file = account.join("ca.crt");
        let ca =
            std::fs::read(&ca_file).map_err(|e| format!("reading {}: {e}", ca_file.display()))?;
        let roots = ureq::tls::parse_pem(&ca)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                _ => None,
            })
            .collect::<Vec<_>>();
        if roots.is_empty() {
            return Err(format!("no certificate in {}", ca_file.display()));
        }
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
            .build();
        // An IPv6 service address needs brackets in a URL.
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(EndpointsLease {
            agent: crate::agent(Some(tls)),
            url: format!("https://{host}:{port}/api/v1/namespaces/{namespace}/endpoints/{name}"),
            token_file: account.join("token"),
            member: member.to_owned(),
        })
    }
}

impl LeaseSource for EndpointsLease {
    fn read(&self) -> LeaseRead {
        let Ok(token) = std::fs::read_to_string(&self.token_file) else {
            return LeaseRead::Unknown;
        };
        let sent = Instant::now();
        let response = self
            .agent
            .get(&self.url)
            .header("Authorization", &format!("Bearer {}", token.trim()))
            .call();
        let Ok(mut response) = response else {
            return LeaseRead::Unknown;
        };
        if response.status() == 404 {
            return LeaseRead::NotMine { holder: None };
        }
        if !response.status().is_success() {
            return LeaseRead::Unknown;
        }
        match response.body_mut().read_json::<Value>() {
            Ok(endpoints) => {
                lease_from_endpoints(&endpoints, &self.member, sent, SystemTime::now())
            }
            Err(_) => LeaseRead::Unknown,
        }
    }
}

/// The lease an Endpoints object shows `member`, read at `sent` (monotonic) and `now` (wall
/// clock, the one `renewTime` was written with).
pub fn lease_from_endpoints(
    endpoints: &Value,
    member: &str,
    sent: Instant,
    now: SystemTime,
) -> LeaseRead {
    let annotations = &endpoints["metadata"]["annotations"];
    let Some(holder) = annotations["leader"].as_str().filter(|h| !h.is_empty()) else {
        return LeaseRead::NotMine { holder: None };
    };
    if holder != member {
        return LeaseRead::NotMine {
            holder: Some(holder.to_owned()),
        };
    }
    let renewed = annotations["renewTime"]
        .as_str()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
    let ttl = annotations["ttl"]
        .as_str()
        .and_then(|t| t.parse::<u64>().ok())
        .or_else(|| annotations["ttl"].as_u64());
    let (Some(renewed), Some(ttl)) = (renewed, ttl) else {
        // A holder without a readable expiry: nothing to go by until the next read.
        return LeaseRead::Unknown;
    };
    let expires = SystemTime::from(renewed) + Duration::from_secs(ttl);
    LeaseRead::Mine {
        sent,
        remaining: expires.duration_since(now).unwrap_or(Duration::ZERO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn endpoints(leader: &str, renew: &str, ttl: &str) -> Value {
        json!({"metadata": {"name": "hippo-ha", "annotations": {
            "leader": leader, "renewTime": renew, "ttl": ttl, "acquireTime": renew, "transitions": "0"
        }}})
    }

    #[test]
    fn the_holder_sees_the_time_left_until_renew_time_plus_ttl() {
        // Patroni writes `datetime.now(tzutc).isoformat()`.
        let renew = "2026-12-03T19:26:38.200000+00:00";
        let renewed = SystemTime::from(OffsetDateTime::parse(renew, &Rfc3339).unwrap());
        let sent = Instant::now();
        let read = lease_from_endpoints(
            &endpoints("hippo-0", renew, "15"),
            "hippo-0",
            sent,
            renewed + Duration::from_secs(4),
        );
        assert_eq!(
            read,
            LeaseRead::Mine {
                sent,
                remaining: Duration::from_secs(11)
            }
        );
        // Past the expiry: nothing left, never negative.
        let late = lease_from_endpoints(
            &endpoints("hippo-0", renew, "15"),
            "hippo-0",
            sent,
            renewed + Duration::from_secs(60),
        );
        assert_eq!(
            late,
            LeaseRead::Mine {
                sent,
                remaining: Duration::ZERO
            }
        );
    }

    #[test]
    fn another_holder_none_or_garbage_are_told_apart() {
        let now = SystemTime::now();
        let sent = Instant::now();
        let renew = "2026-12-03T19:26:38+00:00";
        assert_eq!(
            lease_from_endpoints(&endpoints("hippo-1", renew, "15"), "hippo-0", sent, now),
            LeaseRead::NotMine {
                holder: Some("hippo-1".into())
            }
        );
        // Patroni empties `leader` when it releases the lock; a fresh Endpoints has none.
        assert_eq!(
            lease_from_endpoints(&endpoints("", renew, "15"), "hippo-0", sent, now),
            LeaseRead::NotMine { holder: None }
        );
        assert_eq!(
            lease_from_endpoints(&json!({"metadata": {}}), "hippo-0", sent, now),
            LeaseRead::NotMine { holder: None }
        );
        assert_eq!(
            lease_from_endpoints(
                &endpoints("hippo-0", "yesterday", "15"),
                "hippo-0",
                sent,
                now
            ),
            LeaseRead::Unknown
        );
    }
}
