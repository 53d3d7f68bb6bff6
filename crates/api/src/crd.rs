//! The CustomResourceDefinition as YAML, as `tusk crd` prints it and `deploy/crds/` holds it.

use kube::CustomResourceExt;

use crate::types::PostgresCluster;

/// The `postgresclusters.tusk.rs` CRD, YAML.
pub fn crd_yaml() -> String {
    let crd = PostgresCluster::crd();
    serde_yaml::to_string(&crd).expect("a CRD always serializes")
}
