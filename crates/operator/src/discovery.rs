//! Which of the managed kinds the API server serves, asked once per leadership term.
//!
//! The operator targets current Kubernetes, but a server may lack an optional API (1.20 has no
//! `policy/v1` PodDisruptionBudget). A kind the server does not serve is neither watched,
//! listed nor applied; the reconcile reports it (Warning Event, `Degraded` condition) and
//! keeps everything else working, instead of failing every reconcile on a 404.
//!
//! Reads the discovery endpoints only; holds the client just for [`discover`].

use std::collections::BTreeSet;

use kube::core::ApiResource;
use kube::Client;

/// The managed kinds, split into served and not served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServedKinds {
    /// `(apiVersion, kind)` the server does not serve. Empty = everything is served.
    missing: BTreeSet<(String, String)>,
}

impl ServedKinds {
    /// Every kind served: what a client without discovery (tests, the fake client) assumes.
    pub fn all() -> Self {
        Self::default()
    }

    /// `missing` are not served; anything else is.
    pub fn without(missing: impl IntoIterator<Item = ApiResource>) -> Self {
        Self {
            missing: missing
                .into_iter()
                .map(|r| (r.api_version, r.kind))
                .collect(),
        }
    }

    pub fn serves(&self, resource: &ApiResource) -> bool {
        !self
            .missing
            .contains(&(resource.api_version.clone(), resource.kind.clone()))
    }

    pub fn serves_kind(&self, api_version: &str, kind: &str) -> bool {
        !self
            .missing
            .contains(&(api_version.to_owned(), kind.to_owned()))
    }

    /// `kind (apiVersion)` of every kind not served, sorted, for messages.
    pub fn missing_descriptions(&self) -> Vec<String> {
        self.missing
            .iter()
            .map(|(api_version, kind)| format!("{kind} ({api_version})"))
            .collect()
    }
}

/// Asks the server which of `kinds` it serves: one discovery request per group-version. A
/// group-version the server does not know (404) serves none of its kinds; any other failure
/// is returned, so a flaky server is not mistaken for an old one.
pub async fn discover(client: &Client, kinds: &[ApiResource]) -> Result<ServedKinds, kube::Error> {
    let versions: BTreeSet<&str> = kinds.iter().map(|k| k.api_version.as_str()).collect();
    let mut served: BTreeSet<(String, String)> = BTreeSet::new();
    for api_version in versions {
        // The core group is under /api/v1, every other group under /apis/<group>/<version>.
        let listed = if api_version.contains('/') {
            client.list_api_group_resources(api_version).await
        } else {
            client.list_core_api_resources(api_version).await
        };
        match listed {
            Ok(list) => served.extend(
                list.resources
                    .into_iter()
                    // Subresources (`statefulsets/status`) share the kind; only the resource counts.
                    .filter(|r| !r.name.contains('/'))
                    .map(|r| (api_version.to_owned(), r.kind)),
            ),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(other) => return Err(other),
        }
    }
    Ok(ServedKinds::without(
        kinds
            .iter()
            .filter(|k| !served.contains(&(k.api_version.clone(), k.kind.clone())))
            .cloned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;

    #[test]
    fn a_missing_kind_is_reported_and_others_stay_served() {
        let pdb = ApiResource::erase::<PodDisruptionBudget>(&());
        let sts = ApiResource::erase::<StatefulSet>(&());
        let served = ServedKinds::without([pdb.clone()]);
        assert!(!served.serves(&pdb));
        assert!(!served.serves_kind("policy/v1", "PodDisruptionBudget"));
        assert!(served.serves(&sts));
        assert_eq!(
            served.missing_descriptions(),
            vec!["PodDisruptionBudget (policy/v1)".to_owned()]
        );
        assert!(ServedKinds::all().serves(&pdb));
    }
}
