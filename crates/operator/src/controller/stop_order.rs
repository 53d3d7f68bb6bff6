//! The order in which `spec.shutdown` stops the instances and starts them again: the primary
//! stops last and starts first, so the member with the newest WAL leads again.
//!
//! Why: every instance StatefulSet going to 0 (or to 1) at once lets Patroni on a replica that
//! outlives the primary's stop see no leader and promote itself, and after the start lets any
//! member whose WAL is within `maximum_lag_on_failover` of the last primary take the leader
//! lock first: the cluster then comes back on another member (on a new timeline, the old
//! primary rewound), or without the primary's last commits. The PGO family stops and starts
//! in this order too.
//!
//! - Stopping: the primary (the pod Patroni labels `master`, else `status.primary`) keeps
//!   running until no other instance has a pod; then it stops too. `status.primary` keeps its
//!   name while the cluster is down.
//! - Starting: while no pod is the primary and every other instance is still stopped, only
//!   the remembered primary starts; the others follow once it leads. If it has not led within
//!   [`START_FIRST_LIMIT`] of its pod's creation, the others start anyway and Patroni elects
//!   whoever is healthiest (a volume that cannot start must not keep the cluster down).
//!
//! [`decide`] and [`hold_instances`] are pure; [`instance_pods`] reads the pods (holds the
//! client).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::Resource as _;
use kube::api::{Api, ListParams};
use kube::Client;
use tusk_api::naming;

use super::dereference::Observed;
use super::error::DereferenceError;
use crate::build::Managed;

/// How long a start waits for the previous primary to lead before starting the others.
pub const START_FIRST_LIMIT: Duration = Duration::from_secs(300);

/// What the instances may do in this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopOrder {
    /// As the spec says.
    Free,
    /// Shutting down: `instance` (the primary) keeps running until the others are gone.
    PrimaryLast { instance: String },
    /// Shut down (or the primary's turn to stop): nothing is held; `instance` is remembered.
    Stopped { instance: String },
    /// Starting: only `instance` (the primary before the shutdown) runs until it leads.
    PrimaryFirst { instance: String },
}

impl StopOrder {
    /// The primary to record in `status.primary` while no pod is the primary.
    pub fn remembered_primary(&self) -> Option<&str> {
        match self {
            StopOrder::Free => None,
            StopOrder::PrimaryLast { instance }
            | StopOrder::Stopped { instance }
            | StopOrder::PrimaryFirst { instance } => Some(instance),
        }
    }
}

/// The instance pods that exist, by instance name, with their age.
pub type InstancePods = BTreeMap<String, Duration>;

/// Decides the order (pure). `planned` are the instances of the plan, `remembered` is
/// `status.primary`, `pods` the instance pods that exist.
pub fn decide(
    shutdown: bool,
    planned: &BTreeSet<String>,
    observed: &Observed,
    remembered: Option<&str>,
    pods: &InstancePods,
) -> StopOrder {
    let primary = observed
        .primary
        .as_deref()
        .or(remembered)
        .filter(|p| planned.contains(*p));
    let Some(primary) = primary.map(str::to_owned) else {
        return StopOrder::Free;
    };
    let others_have_pods = pods.keys().any(|i| *i != primary && planned.contains(i));
    if shutdown {
        return if others_have_pods {
            StopOrder::PrimaryLast { instance: primary }
        } else {
            StopOrder::Stopped { instance: primary }
        };
    }
    if observed.primary.is_some() {
        return StopOrder::Free;
    }
    // Starting from a stop: every other planned instance that has a StatefulSet is at 0.
    let others_stopped = planned
        .iter()
        .filter(|i| **i != primary)
        .all(|i| statefulset_replicas(observed, i).is_none_or(|r| r == 0));
    let waited_too_long = pods
        .get(&primary)
        .is_some_and(|age| *age >= START_FIRST_LIMIT);
    if others_stopped && !others_have_pods && !waited_too_long {
        StopOrder::PrimaryFirst { instance: primary }
    } else {
        StopOrder::Free
    }
}

/// `spec.replicas` of instance `name`'s StatefulSet, when it exists.
fn statefulset_replicas(observed: &Observed, name: &str) -> Option<i64> {
    let (_, object) = observed
        .objects
        .get(&(StatefulSet::KIND.to_owned(), name.to_owned()))?;
    Some(object.data["spec"]["replicas"].as_i64().unwrap_or(1))
}

/// Sets the instance StatefulSets' replicas as `order` requires (pure): while stopping, the
/// primary stays at 1; while starting, everything but the primary stays at 0.
pub fn hold_instances(desired: &mut [Managed], order: &StopOrder) {
    for object in desired.iter_mut() {
        let Managed::StatefulSet(set) = object else {
            continue;
        };
        let is_instance = set
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(naming::LABEL_INSTANCE));
        let (Some(name), Some(spec), true) =
            (set.metadata.name.as_deref(), set.spec.as_mut(), is_instance)
        else {
            continue;
        };
        match order {
            StopOrder::PrimaryLast { instance } if instance == name => spec.replicas = Some(1),
            StopOrder::PrimaryFirst { instance } if instance != name => spec.replicas = Some(0),
            _ => {}
        }
    }
}

/// The cluster's instance pods and their age (read only when the order can matter).
pub async fn instance_pods(
    client: &Client,
    namespace: &str,
    cluster: &str,
) -> Result<InstancePods, DereferenceError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "{},{}",
        naming::cluster_selector(cluster),
        naming::LABEL_INSTANCE
    );
    let pods = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| DereferenceError::ListObjects {
            kind: Pod::KIND.to_owned(),
            source,
        })?;
    let now = k8s_openapi::jiff::Timestamp::now();
    Ok(pods
        .items
        .iter()
        .filter_map(|pod| {
            let instance = pod.metadata.labels.as_ref()?.get(naming::LABEL_INSTANCE)?;
            let created = pod.metadata.creation_timestamp.as_ref()?.0;
            let age = Duration::try_from(now.duration_since(created)).unwrap_or_default();
            Some((instance.clone(), age))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::DynamicObject;
    use kube::core::ApiResource;
    use serde_json::json;

    const P: &str = "hippo-a-pppp";
    const R: &str = "hippo-a-rrrr";

    fn planned() -> BTreeSet<String> {
        [P, R].iter().map(|s| s.to_string()).collect()
    }

    /// Both instance StatefulSets with `replicas`, and `primary` labelled `master`.
    fn observed(replicas: [i64; 2], primary: Option<&str>) -> Observed {
        let mut observed = Observed {
            primary: primary.map(str::to_owned),
            ..Observed::default()
        };
        for (name, replicas) in [P, R].into_iter().zip(replicas) {
            let object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": name}, "spec": {"replicas": replicas}
            }))
            .unwrap();
            observed.objects.insert(
                (StatefulSet::KIND.to_owned(), name.to_owned()),
                (ApiResource::erase::<StatefulSet>(&()), object),
            );
        }
        observed
    }

    fn pods(names: &[&str], age: Duration) -> InstancePods {
        names.iter().map(|n| (n.to_string(), age)).collect()
    }

    fn last(instance: &str) -> StopOrder {
        StopOrder::PrimaryLast {
            instance: instance.into(),
        }
    }

    #[test]
    fn shutdown_stops_the_primary_after_the_others() {
        let running = observed([1, 1], Some(P));
        let both = pods(&[P, R], Duration::ZERO);
        assert_eq!(decide(true, &planned(), &running, None, &both), last(P));
        // The replica's pod is gone: the primary's turn, and its name is kept.
        let alone = pods(&[P], Duration::ZERO);
        let order = decide(true, &planned(), &running, None, &alone);
        assert_eq!(order, StopOrder::Stopped { instance: P.into() });
        let down = observed([0, 0], None);
        let order = decide(true, &planned(), &down, Some(P), &InstancePods::new());
        assert_eq!(order.remembered_primary(), Some(P));
    }

    #[test]
    fn start_runs_the_previous_primary_alone_until_it_leads() {
        let down = observed([0, 0], None);
        let first = StopOrder::PrimaryFirst { instance: P.into() };
        assert_eq!(
            decide(false, &planned(), &down, Some(P), &InstancePods::new()),
            first
        );
        let starting = observed([1, 0], None);
        let young = pods(&[P], Duration::from_secs(30));
        assert_eq!(decide(false, &planned(), &starting, Some(P), &young), first);
        // It leads: everyone starts.
        let leading = observed([1, 0], Some(P));
        assert_eq!(
            decide(false, &planned(), &leading, Some(P), &young),
            StopOrder::Free
        );
        // It cannot lead in time: Patroni elects among all.
        let old = pods(&[P], START_FIRST_LIMIT);
        assert_eq!(
            decide(false, &planned(), &starting, Some(P), &old),
            StopOrder::Free
        );
    }

    #[test]
    fn a_failover_in_a_running_cluster_holds_nothing() {
        // The primary's pod was deleted: no pod is `master` for a moment, the status still
        // names it, the replica runs.
        let failing_over = observed([1, 1], None);
        let replica = pods(&[R], Duration::from_secs(3600));
        assert_eq!(
            decide(false, &planned(), &failing_over, Some(P), &replica),
            StopOrder::Free
        );
        // A new cluster has no primary to remember.
        assert_eq!(
            decide(
                false,
                &planned(),
                &Observed::default(),
                None,
                &InstancePods::new()
            ),
            StopOrder::Free
        );
    }

    #[test]
    fn holding_sets_only_the_instance_statefulsets() {
        use k8s_openapi::api::apps::v1::StatefulSetSpec;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        let set = |name: &str, instance: bool, replicas: i32| {
            let labels = instance.then(|| {
                [(naming::LABEL_INSTANCE.to_owned(), name.to_owned())]
                    .into_iter()
                    .collect()
            });
            Managed::StatefulSet(StatefulSet {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    labels,
                    ..ObjectMeta::default()
                },
                spec: Some(StatefulSetSpec {
                    replicas: Some(replicas),
                    ..StatefulSetSpec::default()
                }),
                status: None,
            })
        };
        let replicas = |desired: &[Managed]| -> Vec<i32> {
            desired
                .iter()
                .map(|o| match o {
                    Managed::StatefulSet(s) => s.spec.as_ref().unwrap().replicas.unwrap(),
                    _ => unreachable!(),
                })
                .collect()
        };
        let mut stopping = vec![set(P, true, 0), set(R, true, 0), set("repo", false, 0)];
        hold_instances(&mut stopping, &last(P));
        assert_eq!(replicas(&stopping), [1, 0, 0]);
        let mut starting = vec![set(P, true, 1), set(R, true, 1), set("repo", false, 1)];
        hold_instances(
            &mut starting,
            &StopOrder::PrimaryFirst { instance: P.into() },
        );
        assert_eq!(replicas(&starting), [1, 0, 1]);
    }
}
