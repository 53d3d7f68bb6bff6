//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! reconcile at once. The holder renews the Lease every retry period; another replica takes it
//! only after `leaseDurationSeconds` without a renewal. A leader that cannot renew for 2/3 of
//! the lease duration steps down first, so it has stopped before anyone else can acquire.
//! Optimistic concurrency (resourceVersion on replace, create-if-absent) settles races.
//! [`claim`] is the pure decision; [`LeaderElector`] holds the client.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;

/// What this replica may do with the Lease as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Free, released or expired: take it.
    Acquire,
    /// Ours: renew it.
    Renew,
    /// Someone else holds a live lease.
    HeldByOther { holder: String },
}

/// Decides from the Lease's spec (`None` = no spec yet) what `identity` may do at `now`.
pub fn claim(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Claim {
    let Some(spec) = spec else {
        return Claim::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Claim::Acquire;
    }
    if holder == identity {
        return Claim::Renew;
    }
    let duration_ms = i64::from(spec.lease_duration_seconds.unwrap_or(0)) * 1000;
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0.as_millisecond());
    match renewed {
        Some(renewed) if now.as_millisecond() < renewed + duration_ms => Claim::HeldByOther {
            holder: holder.to_owned(),
        },
        _ => Claim::Acquire,
    }
}

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica (its pod name).
    pub identity: String,
    pub lease_duration: Duration,
    /// How often the Lease is renewed or its acquisition retried.
    pub retry_period: Duration,
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// One attempt to acquire or renew at `now`; `Ok(true)` when this replica holds the Lease.
    pub async fn try_lead(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.acquired(LeaseSpec::default(), now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Another replica created it first.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let spec = match claim(Some(&spec), &self.config.identity, now) {
            Claim::HeldByOther { .. } => return Ok(false),
            Claim::Acquire => self.acquired(spec, now),
            Claim::Renew => LeaseSpec {
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(self.duration_seconds()),
                ..spec
            },
        };
        let updated = Lease {
            spec: Some(spec),
            ..lease
        };
        // `updated` carries the resourceVersion read above: a concurrent writer makes this
        // fail with a conflict instead of both replicas believing they lead.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (on shutdown) so the next leader need not wait for it to expire.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        let released = Lease {
            spec: Some(LeaseSpec {
                holder_identity: None,
                ..spec
            }),
            ..lease
        };
        self.api
            .replace(&self.config.name, &PostParams::default(), &released)
            .await
            .map(|_| ())
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    fn acquired(&self, spec: LeaseSpec, now: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.duration_seconds()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + 1),
            ..spec
        }
    }

    /// Keeps trying to lead until `shutdown` turns true, publishing leadership on `leader`.
    pub async fn run(self, leader: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
        let renew_deadline = self.config.lease_duration * 2 / 3;
        let mut last_renewal: Option<Instant> = None;
        while !*shutdown.borrow() {
            match self.try_lead(Timestamp::now()).await {
                Ok(true) => last_renewal = Some(Instant::now()),
                Ok(false) => last_renewal = None,
                Err(e) => tracing::warn!(error = %e, "could not renew the leader lease"),
            }
            let leading = last_renewal.is_some_and(|t| t.elapsed() < renew_deadline);
            if leader.send_replace(leading) != leading {
                tracing::info!(leading, identity = %self.config.identity, "leadership changed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.retry_period) => {}
                _ = shutdown.changed() => {}
            }
        }
        leader.send_replace(false);
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "could not release the leader lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_fake_client::ClientBuilder;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn held_by(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(at(renewed))),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn claim_follows_holder_and_expiry() {
        assert_eq!(claim(None, "a", at(0)), Claim::Acquire);
        assert_eq!(
            claim(Some(&LeaseSpec::default()), "a", at(0)),
            Claim::Acquire
        );
        let spec = held_by("b", 100, 15);
        assert_eq!(
            claim(Some(&spec), "a", at(110)),
            Claim::HeldByOther { holder: "b".into() }
        );
        assert_eq!(claim(Some(&spec), "a", at(116)), Claim::Acquire);
        assert_eq!(claim(Some(&spec), "b", at(500)), Claim::Renew);
    }

    fn config(identity: &str) -> LeaseConfig {
        LeaseConfig {
            namespace: "tusk-system".into(),
            name: "tusk-operator".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn only_one_replica_leads_until_the_lease_expires() {
        let client = ClientBuilder::new().build().await.unwrap();
        let a = LeaderElector::new(client.clone(), config("a"));
        let b = LeaderElector::new(client.clone(), config("b"));
        assert!(
            a.try_lead(at(1000)).await.unwrap(),
            "free lease is acquired"
        );
        assert!(!b.try_lead(at(1005)).await.unwrap(), "held lease is not");
        assert!(a.try_lead(at(1010)).await.unwrap(), "the holder renews");
        assert!(!b.try_lead(at(1020)).await.unwrap(), "renewal extended it");
        assert!(
            b.try_lead(at(1026)).await.unwrap(),
            "expired lease is taken"
        );
        assert!(
            !a.try_lead(at(1027)).await.unwrap(),
            "the old leader lost it"
        );
        let lease: Api<Lease> = Api::namespaced(client, "tusk-system");
        let spec = lease.get("tusk-operator").await.unwrap().spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(2));
        b.release().await.unwrap();
        assert!(
            a.try_lead(at(1028)).await.unwrap(),
            "a released lease is free"
        );
    }
}
