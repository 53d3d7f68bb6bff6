//! Shared by `reconcile_backups` and `reconcile_restore`: a cluster with a volume repo and
//! the pieces of Jobs those tests read. The harness and the controller-like steps are
//! `common`'s (`common::jobs`).

#![allow(dead_code)] // each test crate uses a different part

use k8s_openapi::api::batch::v1::Job;
use tusk_api::PostgresCluster;

pub use super::common::{Harness, NAME, NS};

pub const VOLUME: &str = "{accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}";

/// A cluster of `replicas` instances with one volume repo; `backups_extra` is added under
/// `spec.backups.pgbackrest`, `spec_extra` under `spec`.
pub fn manifest(replicas: u32, backups_extra: &str, spec_extra: &str) -> PostgresCluster {
    let mut cluster: PostgresCluster = serde_yaml::from_str(&format!(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  postgresVersion: 15
  instances:
    - name: instance1
      replicas: {replicas}
      dataVolumeClaimSpec: {VOLUME}
  backups:
    pgbackrest:
      repos:
        - name: repo1
          volume: {{volumeClaimSpec: {VOLUME}}}
          schedules: {{full: "0 1 * * 0"}}
{backups_extra}
{spec_extra}
"#
    ))
    .expect("test manifest parses");
    cluster.status = Some(Default::default());
    cluster
}

pub const MANUAL: &str = "      manual: {repoName: repo1, options: [--type=full]}";
pub const IN_PLACE: &str = "      restore: {enabled: true, repoName: repo1, options: [--type=time, \"--target=2024-05-01 10:00:00+00\"]}";

pub fn command(job: &Job) -> Vec<String> {
    job.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .command
        .clone()
        .unwrap()
}

pub fn label<'a>(
    labels: &'a Option<std::collections::BTreeMap<String, String>>,
    key: &str,
) -> &'a str {
    labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
        .unwrap_or("")
}
