//! PodDisruptionBudget `<c>-set-<set>` per instance set that has `min_available`.
//!
//! `validate` gives sets with more than one replica `minAvailable: 1` by default and leaves
//! single-instance sets without a budget, so a node running the only instance can still be
//! drained. Pure.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use tusk_api::model::InstanceSetSpec;
use tusk_api::naming::{self, cluster_labels};
use tusk_api::ValidatedCluster;

use super::meta::{labels, object_meta};

/// The set's budget, or `None` when the set has no `min_available`.
pub fn instance_set_pdb(
    cluster: &ValidatedCluster,
    set: &InstanceSetSpec,
) -> Option<PodDisruptionBudget> {
    let min_available = set.min_available.clone()?;
    let mut tusk_labels = cluster_labels(cluster.name());
    tusk_labels.insert(naming::LABEL_INSTANCE_SET.to_owned(), set.name.to_string());
    Some(PodDisruptionBudget {
        metadata: object_meta(
            cluster,
            cluster.names.instance_set_pdb(set.name.as_str()),
            &set.metadata,
            tusk_labels,
        ),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(min_available),
            selector: Some(LabelSelector {
                match_labels: Some(labels(&[
                    (naming::LABEL_CLUSTER, cluster.name()),
                    (naming::LABEL_INSTANCE_SET, set.name.as_str()),
                    (naming::LABEL_DATA, naming::DATA_POSTGRES),
                ])),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}
